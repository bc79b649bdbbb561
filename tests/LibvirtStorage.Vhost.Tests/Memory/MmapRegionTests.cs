using System.Runtime.InteropServices;
using LibvirtStorage.Vhost.Memory;
using Microsoft.Win32.SafeHandles;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Memory;

/// <summary>Real shared memory: a memfd mapped through <see cref="MmapRegion"/>, as a front-end's guest RAM is.</summary>
public sealed partial class MmapRegionTests
{
    [Fact]
    public void MemfdRegion_SharesBytesWithTheFileAtAnUnalignedOffset()
    {
        using SafeFileHandle fd = CreateMemfd(0x10000);
        const ulong offset = 0x1010; // not page-aligned: the mapping starts at the page below

        GuestRegion region = GuestRegion.Map(fd, offset, new GuestAddress(0x4000_0000), 0x2000, userAddress: 0x7f00_1234_0000);
        Assert.True(GuestMemoryMap.TryCreate([region], out GuestMemoryMap? map, out string? reason), reason);
        region.Dispose();
        using var slot = new GuestMemorySlot();
        slot.Replace(map!);

        using (GuestMemoryLease lease = slot.Acquire())
        {
            GuestMemory memory = lease.Memory;
            Assert.True(memory.TryWrite(new GuestAddress(0x4000_0000), 0x0102030405060708ul));
            Assert.True(memory.TryWrite(new GuestAddress(0x4000_1ffc), 0xcafef00du));
            Assert.False(memory.TryWrite(new GuestAddress(0x4000_1ffd), 0xcafef00du)); // one byte past the region
            Assert.True(memory.TryTranslateUserAddress(0x7f00_1234_0100, 8, out GuestAddress gpa));
            Assert.Equal(0x4000_0100ul, gpa.Value);
        }

        var file = new byte[8];
        RandomAccess.Read(fd, file, (long)offset);
        Assert.Equal(0x0102030405060708ul, BitConverter.ToUInt64(file));
        RandomAccess.Read(fd, file.AsSpan(0, 4), (long)offset + 0x1ffc);
        Assert.Equal(0xcafef00du, BitConverter.ToUInt32(file));

        // The file side is visible through the mapping too (MAP_SHARED).
        RandomAccess.Write(fd, BitConverter.GetBytes(0xdeadbeefu), (long)offset + 0x10);
        using (GuestMemoryLease lease = slot.Acquire())
        {
            Assert.True(lease.Memory.TryRead(new GuestAddress(0x4000_0010), out uint value));
            Assert.Equal(0xdeadbeefu, value);
        }

        slot.Dispose();
        Assert.True(region.IsReleased);
    }

    [Fact]
    public void Map_FailsCleanlyForAnOffsetBeyondTheFileOrABadDescriptor()
    {
        using SafeFileHandle fd = CreateMemfd(0x1000);
        MmapRegion beyond = MmapRegion.Map(fd, 0x100000, 0x1000); // mmap allows this (access would SIGBUS); we only map it
        beyond.Dispose();
        Assert.True(beyond.IsClosed);

        using var closed = new SafeFileHandle(-1, ownsHandle: false);
        Assert.Throws<IOException>(() => MmapRegion.Map(closed, 0, 0x1000));
        Assert.Throws<ArgumentOutOfRangeException>(() => MmapRegion.Map(fd, 0, 0));
    }

    private static SafeFileHandle CreateMemfd(long size)
    {
        int fd = MemfdCreate("vhost-test", 1 /* MFD_CLOEXEC */);
        Assert.True(fd >= 0, $"memfd_create failed: errno {Marshal.GetLastPInvokeError()}");
        var handle = new SafeFileHandle(fd, ownsHandle: true);
        Assert.Equal(0, Ftruncate(fd, size));
        return handle;
    }

    [LibraryImport("libc", EntryPoint = "memfd_create", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int MemfdCreate(string name, uint flags);

    [LibraryImport("libc", EntryPoint = "ftruncate", SetLastError = true)]
    private static partial int Ftruncate(int fd, long length);
}
