# vmtool's guest SDK for a Makefile of your own (guest/template/Makefile is one; guest/Makefile uses it too):
#   VMTOOL_SDK := /path/to/vmtool/guest      # this folder
#   include $(VMTOOL_SDK)/sdk.mk
# gives the compiler and linker flags, the linker scripts, and the SDK's library objects (start file, printf,
# memset/memcpy, the machine-description printer), built from the SDK's sources into $(VMTOOL_BUILD)/obj32
# and obj64 (default: build/ in your folder) the first time a rule of yours needs them:
#   VMTOOL_CFLAGS32, VMTOOL_CFLAGS64     gcc flags for 32-bit and 64-bit guest code (the include path too)
#   VMTOOL_LDFLAGS32, VMTOOL_LDFLAGS64   ld flags
#   VMTOOL_LIB32, VMTOOL_LIB64           the library objects: link them first, then your objects
#   VMTOOL_LD_REAL, VMTOOL_LD_PROTECTED, VMTOOL_LD_LONG, VMTOOL_LD_MULTIBOOT, VMTOOL_LD_FLAT32   linker scripts
# Only gcc, binutils and make are needed: no cross compiler, no 32-bit libc or libgcc.

ifndef VMTOOL_SDK
$(error set VMTOOL_SDK to vmtool's guest/ folder before including sdk.mk)
endif
override VMTOOL_SDK := $(abspath $(VMTOOL_SDK))
VMTOOL_BUILD ?= build

# make's built-in default CC is cc; use gcc unless told otherwise.
ifeq ($(origin CC),default)
CC := gcc
endif
LD ?= ld
OBJCOPY ?= objcopy

# Freestanding (no libc), no SSE (-mgeneral-regs-only: the guest need not enable it), reproducible (no build
# IDs, no .comment, the SDK's path mapped to `.`).
VMTOOL_CFLAGS := -std=gnu11 -O2 -Wall -Wextra -Werror -ffreestanding -nostdlib -fno-pic -fno-pie \
  -fno-stack-protector -fno-asynchronous-unwind-tables -fno-unwind-tables -fno-builtin -mgeneral-regs-only \
  -fno-ident -ffile-prefix-map=$(VMTOOL_SDK)=. -I$(VMTOOL_SDK)/include
VMTOOL_CFLAGS32 := $(VMTOOL_CFLAGS) -m32 -march=i686
VMTOOL_CFLAGS64 := $(VMTOOL_CFLAGS) -m64 -mno-red-zone -mcmodel=small
# -z noexecstack: the objects carry no .note.GNU-stack section (ld would warn that the stack is executable).
VMTOOL_LDFLAGS := --build-id=none -z max-page-size=0x1000 -z noexecstack -nostdlib -static
VMTOOL_LDFLAGS32 := -m elf_i386 $(VMTOOL_LDFLAGS)
VMTOOL_LDFLAGS64 := -m elf_x86_64 $(VMTOOL_LDFLAGS)

VMTOOL_LD_REAL := $(VMTOOL_SDK)/ld/real.ld
VMTOOL_LD_PROTECTED := $(VMTOOL_SDK)/ld/protected.ld
VMTOOL_LD_LONG := $(VMTOOL_SDK)/ld/long.ld
VMTOOL_LD_MULTIBOOT := $(VMTOOL_SDK)/ld/multiboot.ld
VMTOOL_LD_FLAT32 := $(VMTOOL_SDK)/ld/flat32.ld

VMTOOL_HEADERS := $(wildcard $(VMTOOL_SDK)/include/vmtool/*.h)
VMTOOL_LIB_NAMES := printf string boot_info_print
VMTOOL_LIB32 := $(VMTOOL_LIB_NAMES:%=$(VMTOOL_BUILD)/obj32/%.o) $(VMTOOL_BUILD)/obj32/start32.o
VMTOOL_LIB64 := $(VMTOOL_LIB_NAMES:%=$(VMTOOL_BUILD)/obj64/%.o) $(VMTOOL_BUILD)/obj64/start64.o

# Pattern rules only (and no explicit target), so that including this file leaves the default goal alone.
$(VMTOOL_BUILD)/obj32/%.o: $(VMTOOL_SDK)/lib/%.c $(VMTOOL_HEADERS)
	@mkdir -p $(@D)
	$(CC) $(VMTOOL_CFLAGS32) -c $< -o $@
$(VMTOOL_BUILD)/obj64/%.o: $(VMTOOL_SDK)/lib/%.c $(VMTOOL_HEADERS)
	@mkdir -p $(@D)
	$(CC) $(VMTOOL_CFLAGS64) -c $< -o $@
$(VMTOOL_BUILD)/obj32/%.o: $(VMTOOL_SDK)/lib/%.S
	@mkdir -p $(@D)
	$(CC) $(VMTOOL_CFLAGS32) -c $< -o $@
$(VMTOOL_BUILD)/obj64/%.o: $(VMTOOL_SDK)/lib/%.S
	@mkdir -p $(@D)
	$(CC) $(VMTOOL_CFLAGS64) -c $< -o $@
