/* Long mode: loads an empty IDT and executes ud2. #UD cannot be delivered (vector beyond the IDT limit), so
 * the CPU raises #GP, then #DF, then shuts down: a triple fault (KVM_EXIT_SHUTDOWN). */
        .code64
        .section .text.start, "ax"
        .globl _start
_start:
        cli
        lidt    empty_idtr(%rip)
        mov     $0x21, %al              /* '!' on the debug console first, so tests see it started */
        out     %al, $0xe9
        ud2
1:      hlt
        jmp     1b

        .section .rodata
        .balign 16
empty_idtr:
        .word   0
        .quad   0
