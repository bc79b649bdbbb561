using Microsoft.Win32.SafeHandles;

namespace LibvirtStorage.Vhost.Memory;

/// <summary>
/// Whether the front-end can still shrink a file we map as guest memory. A mapping stays valid when its file is
/// truncated, but the next touch of a page past the new end raises SIGBUS, which ends the whole process: one
/// hostile front-end could stop every export. A memfd with F_SEAL_SHRINK cannot be truncated by anyone, so such
/// fds are safe to map. QEMU's memory-backend-memfd seals its memfds by default (seal=on: grow, shrink, seal), and
/// libvirt's <c>&lt;source type='memfd'/&gt;</c> uses that backend.
/// </summary>
internal static class MemorySeals
{
    /// <summary>True when <paramref name="fd"/> carries F_SEAL_SHRINK; otherwise false and why (for the log).</summary>
    public static bool IsShrinkSealed(SafeFileHandle fd, out string? why)
    {
        bool added = false;
        try
        {
            fd.DangerousAddRef(ref added);
            int seals = LibC.Fcntl((int)fd.DangerousGetHandle(), LibC.FGetSeals, 0);
            if (seals < 0)
            {
                why = "it is not a sealable memfd (F_GET_SEALS failed; use memory-backend-memfd)";
                return false;
            }

            why = (seals & LibC.SealShrink) != 0 ? null : "the memfd has no F_SEAL_SHRINK (memory-backend-memfd seals it unless seal=off)";
            return why is null;
        }
        finally
        {
            if (added)
                fd.DangerousRelease();
        }
    }
}
