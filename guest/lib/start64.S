/* Entry of 64-bit long-mode guests (ELF64): own stack, then main(boot_info) with the address vmtool put in
 * RSI. main's return value r: 0 halts (status 0), else r is written to the exit port. */
        .section .text.start, "ax"
        .code64
        .globl _start
_start:
        cli
        lea     __stack_top(%rip), %rsp
        mov     %rsi, %rdi
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
