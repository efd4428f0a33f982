/* A Multiboot kernel in the a.out-kludge form (header flag bit 16): a flat binary whose header gives the load
 * addresses. Checks the boot loader's magic in EAX and that its .bss was zeroed, then halts. */
        .code32
        .section .multiboot, "a"
        .balign 4
mb_header:
        .long   0x1BADB002
        .long   0x00010002              /* memory info, a.out kludge */
        .long   -(0x1BADB002 + 0x00010002)
        .long   mb_header               /* header_addr */
        .long   0x100000                /* load_addr: the file's first byte */
        .long   _load_end               /* load_end_addr */
        .long   _bss_end                /* bss_end_addr */
        .long   _start                  /* entry_addr */

        .section .text.start, "ax"
        .globl _start
_start:
        cli
        mov     $msg_bad_magic, %esi
        cmp     $0x2BADB002, %eax
        jne     done
        mov     $msg_bad_bss, %esi
        cmpl    $0, bss_word
        jne     done
        mov     $msg_ok, %esi
done:   lodsb
        test    %al, %al
        jz      1f
        out     %al, $0xe9
        jmp     done
1:      cli
        hlt
        jmp     1b

        .section .rodata
msg_ok:        .asciz "multiboot a.out kludge: magic ok, bss zeroed\n"
msg_bad_magic: .asciz "multiboot a.out kludge: bad magic in eax\n"
msg_bad_bss:   .asciz "multiboot a.out kludge: bss not zeroed\n"

        .section .bss
        .balign 4
bss_word: .space 4096
