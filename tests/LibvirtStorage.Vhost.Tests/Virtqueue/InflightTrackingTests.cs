using LibvirtStorage.Vhost.Memory;
using LibvirtStorage.Vhost.Tests.Memory;
using LibvirtStorage.Vhost.Virtqueue;
using Microsoft.Win32.SafeHandles;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Virtqueue;

/// <summary>
/// A real memfd inflight area (as GET_INFLIGHT_FD makes it), mapped as SET_INFLIGHT_FD maps it. Tests write the
/// raw bytes through <see cref="Bytes"/> to play a front-end or a dead back-end.
/// </summary>
internal sealed class TestInflightArea : IDisposable
{
    public TestInflightArea(ushort queueCount, ushort queueSize)
    {
        Fd = InflightArea.CreateFile(queueCount, queueSize);
        Assert.Null(InflightArea.TryMap(Fd, InflightArea.AreaSize(queueCount, queueSize), 0, queueCount, queueSize, out InflightArea? area));
        Area = area!;
        // A second view of the same pages for the test's raw reads and writes.
        Raw = MmapRegion.Map(Fd, 0, InflightArea.AreaSize(queueCount, queueSize));
    }

    public SafeFileHandle Fd { get; }

    public InflightArea Area { get; }

    public MmapRegion Raw { get; }

    public unsafe Span<byte> Bytes => new((void*)Raw.Pointer, (int)Raw.Size);

    public Span<byte> Queue(int index) => Bytes.Slice((int)((ulong)index * InflightArea.QueueStride(Area.QueueSize)), (int)InflightArea.QueueStride(Area.QueueSize));

    public void Dispose()
    {
        Raw.Dispose();
        Area.Dispose();
        Fd.Dispose();
    }
}

/// <summary>
/// Inflight tracking on a <see cref="SplitVirtqueue"/> (vhost-user.rst "Inflight I/O tracking", split queues):
/// marking on pop, clearing around the used entry, and recovery (fix-up, resubmission in counter order) by a
/// queue that starts on the area a dead back-end left — including areas a hostile front-end wrote.
/// </summary>
public sealed class InflightTrackingTests
{
    private static (FakeGuestMemory Fake, FakeDriver Driver) Guest(ushort size = 16)
    {
        var fake = FakeGuestMemory.Standard();
        return (fake, new FakeDriver(fake.Memory, size));
    }

    private static ushort AddRequest(FakeDriver driver, int i) =>
        driver.AddChain((0x100000 + (0x100ul * (uint)i), 16, false), (0x108000 + (0x100ul * (uint)i), 16, true));

    // A new back-end's queue on the same rings: size, addresses, validation, used idx from the ring, then the area.
    private static SplitVirtqueue Restart(FakeDriver driver, GuestMemory memory, InflightQueue region, ushort baseIndex = 0)
    {
        SplitVirtqueue queue = driver.CreateQueue();
        queue.SetIndices(baseIndex, baseIndex);
        Assert.Equal(QueueError.None, queue.Validate(memory));
        Assert.True(queue.TryResumeUsedIndexFromRing(memory));
        queue.AttachInflight(region);
        return queue;
    }

    private static List<ushort> PopAll(SplitVirtqueue queue, GuestMemory memory)
    {
        var heads = new List<ushort>();
        while (queue.TryPopAvail(memory, out DescriptorChain chain) == PopResult.Chain)
            heads.Add(chain.Head);
        return heads;
    }

    [Fact]
    public void A_fresh_area_is_initialised_with_the_rings_used_idx()
    {
        var (fake, driver) = Guest();
        using var guest = fake;
        using var area = new TestInflightArea(2, 16);
        driver.StartAt(7);
        SplitVirtqueue queue = Restart(driver, fake.Memory, area.Area.Queue(1), 7);
        Assert.Equal(QueueError.None, queue.Error);
        InflightQueue region = area.Area.Queue(1);
        Assert.Equal(InflightArea.CurrentVersion, region.Version);
        Assert.Equal(16, BitConverter.ToUInt16(area.Queue(1)[10..12]));
        Assert.Equal(7, region.UsedIdx);
        Assert.Equal(0, area.Area.Queue(0).Version); // only this queue's region was touched
        Assert.Equal(0, queue.PendingResubmissions);
    }

    [Fact]
    public void Pop_marks_with_increasing_counters_and_AddUsed_clears_and_records_the_batch()
    {
        var (fake, driver) = Guest();
        using var guest = fake;
        using var area = new TestInflightArea(1, 16);
        InflightQueue region = area.Area.Queue(0);
        SplitVirtqueue queue = Restart(driver, fake.Memory, region);
        ushort a = AddRequest(driver, 0), b = AddRequest(driver, 1);
        Assert.Equal([a, b], PopAll(queue, fake.Memory));
        Assert.Equal(1, region.Inflight(a));
        Assert.Equal(1, region.Inflight(b));
        Assert.True(region.Counter(b) > region.Counter(a));

        Assert.True(queue.AddUsed(fake.Memory, b, 16));
        Assert.Equal(0, region.Inflight(b));
        Assert.Equal(1, region.Inflight(a));
        Assert.Equal(b, region.LastBatchHead);
        Assert.Equal(1, region.UsedIdx);
        Assert.Equal(driver.UsedIdx, region.UsedIdx);
    }

    [Fact]
    public void Unfinished_heads_are_resubmitted_once_in_counter_order_before_new_ones()
    {
        var (fake, driver) = Guest();
        using var guest = fake;
        using var area = new TestInflightArea(1, 16);
        SplitVirtqueue dead = Restart(driver, fake.Memory, area.Area.Queue(0));
        var heads = new ushort[5];
        for (int i = 0; i < heads.Length; i++)
            heads[i] = AddRequest(driver, i);
        Assert.Equal(heads, PopAll(dead, fake.Memory));
        // Out of order: 1 and 3 finish, then the back-end dies with 0, 2 and 4 popped.
        Assert.True(dead.AddUsed(fake.Memory, heads[3], 16));
        Assert.True(dead.AddUsed(fake.Memory, heads[1], 16));
        ushort later = AddRequest(driver, 5);

        // QEMU sends the used idx as the base after a lost connection; the area overrides it.
        SplitVirtqueue queue = Restart(driver, fake.Memory, area.Area.Queue(0), baseIndex: 2);
        Assert.Equal(QueueError.None, queue.Error);
        Assert.Equal(3, queue.PendingResubmissions);
        Assert.Equal((ushort)5, queue.NextAvail); // used idx 2 + 3 in flight
        Assert.Equal([heads[0], heads[2], heads[4], later], PopAll(queue, fake.Memory));
        foreach (ushort head in new[] { heads[0], heads[2], heads[4], later })
            Assert.True(queue.AddUsed(fake.Memory, head, 16));
        Assert.Equal(6, driver.UsedIdx);
        for (ushort i = 0; i < 16; i++)
            Assert.Equal(0, area.Area.Queue(0).Inflight(i));

        // A third back-end finds nothing to redo.
        SplitVirtqueue third = Restart(driver, fake.Memory, area.Area.Queue(0));
        Assert.Equal(0, third.PendingResubmissions);
        Assert.Empty(PopAll(third, fake.Memory));
    }

    [Fact]
    public void The_counter_continues_after_the_resubmitted_heads()
    {
        var (fake, driver) = Guest();
        using var guest = fake;
        using var area = new TestInflightArea(1, 16);
        InflightQueue region = area.Area.Queue(0);
        SplitVirtqueue dead = Restart(driver, fake.Memory, region);
        ushort a = AddRequest(driver, 0);
        Assert.Equal([a], PopAll(dead, fake.Memory));
        ulong counter = region.Counter(a);

        SplitVirtqueue queue = Restart(driver, fake.Memory, region);
        ushort b = AddRequest(driver, 1);
        Assert.Equal([a, b], PopAll(queue, fake.Memory));
        Assert.Equal(counter, region.Counter(a));
        Assert.True(region.Counter(b) > counter);
    }

    [Fact]
    public void A_half_published_batch_is_fixed_up_from_last_batch_head()
    {
        var (fake, driver) = Guest();
        using var guest = fake;
        using var area = new TestInflightArea(1, 16);
        InflightQueue region = area.Area.Queue(0);
        SplitVirtqueue dead = Restart(driver, fake.Memory, region);
        var heads = new ushort[3];
        for (int i = 0; i < heads.Length; i++)
            heads[i] = AddRequest(driver, i);
        Assert.Equal(heads, PopAll(dead, fake.Memory));

        // By hand, a batching back-end that died after publishing used->idx for heads 0 and 1 but before clearing
        // their flags and recording used_idx: list last_batch_head = 1 → 0, used_idx still 0, ring idx 2.
        Span<byte> q = area.Queue(0);
        BitConverter.TryWriteBytes(q[(16 + (16 * heads[0]) + 6)..], (ushort)9); // stale link past the batch end
        BitConverter.TryWriteBytes(q[(16 + (16 * heads[1]) + 6)..], heads[0]);
        BitConverter.TryWriteBytes(q[12..], heads[1]);
        Assert.True(fake.Memory.TryWrite(new GuestAddress(driver.Used.Value + 4), new VirtqUsedElement(heads[0], 16)));
        Assert.True(fake.Memory.TryWrite(new GuestAddress(driver.Used.Value + 12), new VirtqUsedElement(heads[1], 16)));
        Assert.True(fake.Memory.TryStoreRelease16(new GuestAddress(driver.Used.Value + 2), 2));
        Assert.Equal(0, region.UsedIdx);

        SplitVirtqueue queue = Restart(driver, fake.Memory, region);
        Assert.Equal(QueueError.None, queue.Error);
        Assert.Equal(2, region.UsedIdx);
        Assert.Equal(0, region.Inflight(heads[0]));
        Assert.Equal(0, region.Inflight(heads[1]));
        Assert.Equal([heads[2]], PopAll(queue, fake.Memory));
        Assert.Equal(0, region.Inflight(9));
    }

    [Fact]
    public void A_crash_between_publishing_and_clearing_is_repaired_by_the_next_start()
    {
        var (fake, driver) = Guest();
        using var guest = fake;
        using var area = new TestInflightArea(1, 16);
        InflightQueue region = area.Area.Queue(0);
        SplitVirtqueue dead = Restart(driver, fake.Memory, region);
        ushort a = AddRequest(driver, 0), b = AddRequest(driver, 1);
        Assert.Equal([a, b], PopAll(dead, fake.Memory));
        // Our own order, stopped after used->idx is published: BeginPut, used entry + idx, but no EndPut.
        region.BeginPut(a);
        Assert.True(fake.Memory.TryWrite(new GuestAddress(driver.Used.Value + 4), new VirtqUsedElement(a, 16)));
        Assert.True(fake.Memory.TryStoreRelease16(new GuestAddress(driver.Used.Value + 2), 1));

        SplitVirtqueue queue = Restart(driver, fake.Memory, region);
        Assert.Equal([b], PopAll(queue, fake.Memory));
        Assert.Equal(1, region.UsedIdx);
    }

    [Theory]
    [InlineData("version")]
    [InlineData("batch longer than the queue")]
    [InlineData("last_batch_head out of range")]
    [InlineData("next out of range")]
    [InlineData("flag on a head beyond the queue")]
    [InlineData("flag value 2")]
    public void A_corrupt_area_breaks_the_queue_before_it_runs(string corruption)
    {
        var (fake, driver) = Guest(size: 16);
        using var guest = fake;
        using var area = new TestInflightArea(1, 32); // room for 32 entries, the queue has 16
        InflightQueue region = area.Area.Queue(0);
        SplitVirtqueue first = Restart(driver, fake.Memory, region);
        for (int i = 0; i < 3; i++)
            AddRequest(driver, i);
        Assert.Equal(3, PopAll(first, fake.Memory).Count);
        Span<byte> q = area.Queue(0);
        switch (corruption)
        {
            case "version":
                BitConverter.TryWriteBytes(q[8..], (ushort)7);
                break;
            case "batch longer than the queue":
                Assert.True(fake.Memory.TryStoreRelease16(new GuestAddress(driver.Used.Value + 2), 40));
                break;
            case "last_batch_head out of range":
                BitConverter.TryWriteBytes(q[12..], (ushort)20);
                Assert.True(fake.Memory.TryStoreRelease16(new GuestAddress(driver.Used.Value + 2), 1));
                break;
            case "next out of range":
                BitConverter.TryWriteBytes(q[12..], (ushort)1);
                BitConverter.TryWriteBytes(q[(16 + 16 + 6)..], (ushort)31);
                Assert.True(fake.Memory.TryStoreRelease16(new GuestAddress(driver.Used.Value + 2), 2));
                break;
            case "flag on a head beyond the queue":
                q[16 + (16 * 20)] = 1;
                break;
            default:
                q[16 + (16 * 1)] = 2;
                break;
        }

        SplitVirtqueue queue = Restart(driver, fake.Memory, region);
        Assert.Equal(QueueError.InflightAreaCorrupt, queue.Error);
        Assert.False(queue.IsTracked);
        Assert.Equal(PopResult.Broken, queue.TryPopAvail(fake.Memory, out _));
        Assert.True(fake.GuardsIntact());
    }

    [Fact]
    public void An_area_smaller_than_the_queue_is_refused()
    {
        var (fake, driver) = Guest(size: 16);
        using var guest = fake;
        using var area = new TestInflightArea(1, 8);
        SplitVirtqueue queue = Restart(driver, fake.Memory, area.Area.Queue(0));
        Assert.Equal(QueueError.InflightAreaTooSmall, queue.Error);
    }

    [Fact]
    public void Garbage_counters_and_flags_on_every_head_only_change_the_order()
    {
        var (fake, driver) = Guest(size: 16);
        using var guest = fake;
        using var area = new TestInflightArea(1, 16);
        InflightQueue region = area.Area.Queue(0);
        Restart(driver, fake.Memory, region);
        var random = new Random(5);
        Span<byte> q = area.Queue(0);
        for (int i = 0; i < 16; i++)
        {
            q[16 + (16 * i)] = 1;
            BitConverter.TryWriteBytes(q[(16 + (16 * i) + 8)..], i == 3 ? ulong.MaxValue : (ulong)random.NextInt64());
        }

        for (int i = 0; i < 16; i++)
            AddRequest(driver, i); // descriptors for every head, so each resubmitted chain can be walked

        SplitVirtqueue queue = Restart(driver, fake.Memory, region);
        Assert.Equal(QueueError.None, queue.Error);
        Assert.Equal(16, queue.PendingResubmissions);
        List<ushort> popped = PopAll(queue, fake.Memory);
        Assert.Equal(16, popped.Distinct().Count());
        Assert.Equal(3, popped[^1]); // the largest counter comes last
        Assert.True(fake.GuardsIntact());
    }
}
