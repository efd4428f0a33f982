/* Real mode, flat binary (vmtool's default: loaded and entered at 0x7C00). Position-independent, so it works
 * whether vmtool enters it as 0000:7C00 or 07C0:0000. Prints two lines on the debug console and halts. */
        .code16
        .section .text.start, "ax"
        .globl _start
_start:
        cli
        call    1f                      /* BX = where we really run minus where we were linked */
1:      pop     %bx
        sub     $1b, %bx
        mov     %cs, %ax
        mov     %ax, %ds
        lea     hello(%bx), %si
        call    print
        smsw    %ax                     /* CR0.PE must be clear in real mode */
        lea     pe_clear(%bx), %si
        test    $1, %al
        jz      2f
        lea     pe_set(%bx), %si
2:      call    print
3:      cli
        hlt
        jmp     3b

/* Writes the NUL-terminated string at DS:SI to port 0xE9. */
print:
        lodsb
        test    %al, %al
        jz      4f
        out     %al, $0xe9
        jmp     print
4:      ret

hello:    .asciz "hello from real mode (16-bit)\n"
pe_clear: .asciz "cr0.pe=0\n"
pe_set:   .asciz "cr0.pe=1 (not real mode!)\n"
