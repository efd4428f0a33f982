/* Long mode: 200,000 one-byte OUTs to the debug console (port 0xE9), then a halt. The exit-path benchmark
 * guest: each OUT is one VM exit; it writes 199,999 dots and a newline. */
        .code64
        .section .text.start, "ax"
        .globl _start
_start:
        cli
        mov     $199999, %ecx
        mov     $0x2e, %al
1:      out     %al, $0xe9
        dec     %ecx
        jnz     1b
        mov     $0x0a, %al
        out     %al, $0xe9
2:      cli
        hlt
        jmp     2b
