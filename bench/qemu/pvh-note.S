/* The PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY = 18): with it QEMU's -kernel boots an ELF32 in 32-bit protected
 * mode with paging off at _start, the state vmtool's ELF32 guests start in. Only for bench/virtio.mjs. */
        .section .note.Xen, "a", @note
        .p2align 2
        .long 4
        .long 4
        .long 18
        .asciz "Xen"
        .long _start
        .section .note.GNU-stack, "", @progbits
