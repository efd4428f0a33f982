/* A guest that walks through every x86 mode, for debugging it with gdb (vmtool run --gdb; docs/gdb.md):
 * real mode at 0x7C00 -> 32-bit protected mode -> long mode (its own GDT, page tables and IDT), with port
 * I/O, an MMIO write and a watched variable in each, a spin loop that waits for the debugger, and an int3 of
 * its own that its #BP handler answers. Built as an ELF with symbols (for gdb) and a flat binary (for
 * `vmtool run --mode real`); see test/gdb/guests.ts.
 *
 * Debug console 0xE9: "R" in real mode, "P" in protected mode, "L" in long mode, "S" when it starts to spin,
 * "." now and then while it spins, "B" from the #BP handler. Exit port 0xF4: 0x2a from the #BP handler (status 85), or 0x11 if the int3 came
 * back unhandled.
 */
        .set PML4, 0x20000
        .set PDPT, 0x21000
        .set PD_LOW, 0x22000
        .set PD_MMIO, 0x23000
        .set MMIO_ADDR, 0xd0001000      /* unclaimed MMIO: a write there is an exit, nothing more */

        .code16
        .section .text
        .globl _start, real_out, real_in, real_write, protected_entry, protected_out, long_entry, long_out
        .globl long_mmio, long_after_mmio, count_loop, long_write, spin, guest_int3, bp_handler
_start:
        cli
        xor     %ax, %ax
        mov     %ax, %ds
        mov     %ax, %es
        mov     %ax, %ss
        mov     $0x7000, %sp
real_out:
        mov     $'R', %al
        out     %al, $0xe9
real_in:
        in      $0x80, %al
real_write:
        movw    $0x1111, real_var
real_to_protected:
        lgdtl   gdt_desc
        mov     %cr0, %eax
        or      $1, %eax
        mov     %eax, %cr0
        ljmpl   $0x08, $protected_entry

        .code32
protected_entry:
        mov     $0x10, %ax
        mov     %ax, %ds
        mov     %ax, %es
        mov     %ax, %ss
        mov     $0x7000, %esp
protected_out:
        mov     $'P', %al
        out     %al, $0xe9
protected_write:
        movl    $0x2222, protected_var
        /* Page tables: identity-map the first 2 MiB, and the 2 MiB around MMIO_ADDR. */
        mov     $PML4, %edi
        xor     %eax, %eax
        mov     $4096, %ecx
        rep stosl
        movl    $PDPT + 3, PML4
        movl    $PD_LOW + 3, PDPT
        movl    $PD_MMIO + 3, PDPT + 3 * 8
        movl    $0x83, PD_LOW
        movl    $(MMIO_ADDR & 0xffe00000) + 0x83, PD_MMIO + ((MMIO_ADDR >> 21) & 511) * 8
        mov     $PML4, %eax
        mov     %eax, %cr3
        mov     %cr4, %eax
        or      $0x20, %eax             /* PAE */
        mov     %eax, %cr4
        mov     $0xc0000080, %ecx       /* EFER.LME */
        rdmsr
        or      $0x100, %eax
        wrmsr
protected_to_long:
        mov     %cr0, %eax
        or      $0x80000000, %eax       /* PG: long mode is active from here */
        mov     %eax, %cr0
        ljmp    $0x18, $long_entry

        .code64
long_entry:
        lidt    idt_desc
long_out:
        mov     $'L', %al
        out     %al, $0xe9
        mov     $MMIO_ADDR, %edi
long_mmio:
        movl    $0x55, (%rdi)
long_after_mmio:
        mov     $3, %ecx
count_loop:
        incl    counter
        dec     %ecx
        jnz     count_loop
long_write:
        movq    $0x4444, long_var
        mov     $'S', %al
        out     %al, $0xe9
        mov     $0x10000, %ecx
spin:                                   /* until the debugger sets go: a '.' every 65536 rounds */
        cmpl    $0, go
        jne     guest_int3
        dec     %ecx
        jnz     spin
        mov     $'.', %al
        out     %al, $0xe9
        mov     $0x10000, %ecx
        jmp     spin
guest_int3:
        int3
        mov     $0x11, %al              /* reached only if the int3 came back without the handler */
        out     %al, $0xf4
        hlt

bp_handler:
        mov     $'B', %al
        out     %al, $0xe9
        mov     $0x2a, %al
        out     %al, $0xf4
        hlt

        .p2align 3
gdt:
        .quad   0
        .quad   0x00cf9a000000ffff      /* 0x08: 32-bit code */
        .quad   0x00cf92000000ffff      /* 0x10: data */
        .quad   0x00af9a000000ffff      /* 0x18: 64-bit code */
gdt_desc:
        .word   gdt_desc - gdt - 1
        .long   gdt
        .p2align 4
idt:
        .fill   3 * 16, 1, 0            /* vectors 0-2 */
        .word   bp_handler              /* vector 3: a 64-bit interrupt gate to bp_handler (below 64 KiB) */
        .word   0x18
        .byte   0, 0x8e
        .word   0
        .long   0, 0
idt_end:
idt_desc:
        .word   idt_end - idt - 1
        .quad   idt

        /* The variables, on a page of their own (watchpoints protect whole pages). */
        .section .data
        .p2align 12
        .globl real_var, protected_var, counter, long_var, go
real_var:       .word 0
        .p2align 2
protected_var:  .long 0
counter:        .long 0
        .p2align 3
long_var:       .quad 0
go:             .long 0
