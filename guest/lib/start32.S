/* Entry of 32-bit protected-mode guests (ELF32 and flat): own stack, then main(boot_info) with the
 * address vmtool put in ESI. main's return value r: 0 halts (status 0), else r is written to the exit port. */
        .section .text.start, "ax"
        .code32
        .globl _start
_start:
        cli
        mov     $__stack_top, %esp
        push    %esi
        call    main
        test    %eax, %eax
        jz      1f
        out     %al, $0xf4
1:      cli
        hlt
        jmp     1b

        .section .bss
        .balign 16
        .space  16384
__stack_top:
