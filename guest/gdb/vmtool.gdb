# gdb helpers for guests run with `vmtool run --gdb` (docs/gdb.md). Load with:  source guest/gdb/vmtool.gdb
#
#   vmtool-reconnect [TARGET]  disconnect and connect again (the VM stays stopped in between), so that gdb takes
#                              the register layout of the mode the guest is in now (after real -> protected ->
#                              long mode); TARGET defaults to the current connection's (e.g. :1234)
#   vmtool-mode                the CPU mode of each vCPU (monitor mode)
#   vmtool-sys                 control registers, EFER, segment caches, descriptor tables, decoded
#   vmtool-pc [N]              the next N (default 5) instructions at CS:IP, i.e. at cs_base + eip: right in
#                              real mode, where gdb's $pc is IP alone
#   vmtool-cs-ip               CS:IP and the linear address it makes
#   vmtool-walk ADDR           the page walk of linear address ADDR (monitor translate)
#   vmtool-phys on|off         memory accesses by guest-physical address (monitor phys)

python
import gdb

class VmtoolReconnect(gdb.Command):
    """Disconnect and connect again: gdb takes the register layout of the guest's mode now."""

    def __init__(self):
        super().__init__("vmtool-reconnect", gdb.COMMAND_RUNNING)

    def invoke(self, arg, from_tty):
        target = arg.strip()
        if not target:
            conn = gdb.selected_inferior().connection
            if conn is None or not conn.details:
                raise gdb.GdbError("vmtool-reconnect: not connected; give the target, e.g. vmtool-reconnect :1234")
            target = conn.details
        gdb.execute("disconnect", to_string=True)
        gdb.execute("target remote " + target, from_tty)

VmtoolReconnect()
end

define vmtool-mode
  monitor mode
end
document vmtool-mode
The CPU mode of each vCPU, its paging mode, and the register layout gdb was given.
end

define vmtool-sys
  monitor regs sys
end
document vmtool-sys
Control registers, EFER, segment caches (base, limit, attributes), GDTR, IDTR, LDTR, TR, debug registers.
end

define vmtool-pc
  if $argc == 0
    x/5i $cs_base + $pc
  else
    eval "x/%di $cs_base + $pc", $arg0
  end
end
document vmtool-pc
The next instructions at CS:IP (the linear address cs_base + eip), as the CPU will fetch them.
end

define vmtool-cs-ip
  printf "cs:ip %04x:%04x = linear 0x%x\n", $cs, $pc, $cs_base + $pc
end
document vmtool-cs-ip
CS:IP and the linear address they make (real mode: cs_base is cs * 16 unless the guest left unreal mode).
end

define vmtool-walk
  eval "monitor translate 0x%lx", $arg0
end
document vmtool-walk
The translation of a linear address through the current vCPU's paging, level by level.
end

define vmtool-phys
  monitor phys $arg0
end
document vmtool-phys
vmtool-phys on: gdb's memory accesses are by guest-physical address; off: by linear address (the default).
end
