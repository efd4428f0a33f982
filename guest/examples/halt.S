/* Halts at once with interrupts disabled (vmtool ends with status 0). The two bytes FA F4 mean the same in
 * every mode, so the flat binary runs as real, protected or long mode code. */
        .section .text.start, "ax"
        .globl _start
_start:
        cli
        hlt
        jmp     _start
