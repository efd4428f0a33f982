/* 64-bit long mode: a software interrupt (int $0x30) through the IDT, the handler IRETQs. */
.code64
.globl _start
_start:
  lea handler(%rip), %rax
  mov $0x200000 + 0x30*16, %rdi
  mov %ax, (%rdi)
  movw $0x18, 2(%rdi)
  movw $0x8e00, 4(%rdi)
  shr $16, %rax
  mov %ax, 6(%rdi)
  shr $16, %rax
  mov %eax, 8(%rdi)
  movl $0, 12(%rdi)
  lidt idtr(%rip)
  int $0x30
  mov $'B', %al
  out %al, $0xe9
  mov $'\n', %al
  out %al, $0xe9
  cli
  hlt
handler:
  mov $'A', %al
  out %al, $0xe9
  iretq
idtr: .word 0xfff
  .quad 0x200000
