using LibvirtStorage.Vhost.Memory;
using LibvirtStorage.Vhost.Tests.Memory;
using LibvirtStorage.Vhost.Virtqueue;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Virtqueue;

public sealed class SplitVirtqueueTests : IDisposable
{
    private const ulong Data = 0x100000;
    private readonly FakeGuestMemory _fake = new((0, 0x10000, false), (0x10000, 0x10000, false), (0x100000, 0x10000, false), (0x200000, 0x1000, true));

    private GuestMemory Memory => _fake.Memory;

    public void Dispose()
    {
        Assert.True(_fake.GuardsIntact());
        _fake.Dispose();
    }

    [Theory]
    [InlineData(1u, true)]
    [InlineData(2u, true)]
    [InlineData(256u, true)]
    [InlineData(32768u, true)]
    [InlineData(0u, false)]
    [InlineData(3u, false)]
    [InlineData(384u, false)]
    [InlineData(32769u, false)]
    [InlineData(65536u, false)]
    [InlineData(uint.MaxValue, false)]
    public void QueueSize_MustBeANonZeroPowerOfTwoUpTo32768(uint size, bool valid)
    {
        var queue = new SplitVirtqueue();
        Assert.Equal(valid, SplitVirtqueue.IsValidSize(size));
        Assert.Equal(valid, queue.TrySetSize(size));
        Assert.Equal(valid ? (ushort)size : (ushort)0, queue.Size);
    }

    [Fact]
    public void UnsizedQueue_FailsValidation() =>
        Assert.Equal(QueueError.BadSize, new SplitVirtqueue().Validate(Memory));

    [Theory]
    [InlineData(0x8ul, 0x4000ul, 0x8000ul)]
    [InlineData(0x0ul, 0x4001ul, 0x8000ul)]
    [InlineData(0x0ul, 0x4000ul, 0x8002ul)]
    public void MisalignedRings_FailValidation(ulong desc, ulong avail, ulong used) =>
        Assert.Equal(QueueError.Misaligned, Configure(16, desc, avail, used).Validate(Memory));

    [Theory]
    [InlineData(0x1ff00ul, 0x4000ul, 0x8000ul, (int)QueueError.DescTableOutsideMemory)] // 256 entries run into the gap
    [InlineData(0x90000000ul, 0x4000ul, 0x8000ul, (int)QueueError.DescTableOutsideMemory)]
    [InlineData(0xfffffffffffffff0ul, 0x4000ul, 0x8000ul, (int)QueueError.DescTableOutsideMemory)] // wraps
    [InlineData(0x0ul, 0x1fffeul, 0x8000ul, (int)QueueError.AvailRingOutsideMemory)]
    [InlineData(0x0ul, 0x4000ul, 0x10fffcul, (int)QueueError.UsedRingOutsideMemory)]
    [InlineData(0x0ul, 0x4000ul, 0x200000ul, (int)QueueError.UsedRingOutsideMemory)] // read-only memory
    [InlineData(0x0ul, 0x200000ul, 0x8000ul, (int)QueueError.None)] // the driver-written avail ring may be read-only to us
    public void RingsOutsideMemory_FailValidation(ulong desc, ulong avail, ulong used, int expected) =>
        Assert.Equal((QueueError)expected, Configure(256, desc, avail, used).Validate(Memory));

    [Fact]
    public void EventIdx_ExtendsBothRingsByTheirEventFields()
    {
        // Size 16: the avail ring is 36 bytes (38 with used_event), the used ring 132 (134 with avail_event).
        SplitVirtqueue queue = Configure(16, 0x0, 0x1ffdc, 0x1000);
        Assert.Equal(QueueError.None, queue.Validate(Memory));
        queue.EventIdx = true;
        Assert.Equal(QueueError.NotReady, queue.Error);
        Assert.Equal(QueueError.AvailRingOutsideMemory, queue.Validate(Memory));

        queue = Configure(16, 0x0, 0x1000, 0x1ff7c);
        Assert.Equal(QueueError.None, queue.Validate(Memory));
        queue.EventIdx = true;
        Assert.Equal(QueueError.UsedRingOutsideMemory, queue.Validate(Memory));
    }

    [Fact]
    public void UnvalidatedQueue_RefusesToRun()
    {
        SplitVirtqueue queue = Configure(16, 0x0, 0x4000, 0x8000);
        Assert.Equal(PopResult.Broken, queue.TryPopAvail(Memory, out _));
        Assert.Equal(QueueError.NotReady, queue.Error);
        Assert.False(queue.AddUsed(Memory, 0, 0));
        Assert.True(queue.EnableNotification(Memory)); // "look again": the pop reports the error
    }

    [Fact]
    public void EmptyQueue_PopsNothing()
    {
        var driver = new FakeDriver(Memory, 16);
        SplitVirtqueue queue = driver.CreateQueue();
        Assert.Equal(PopResult.Empty, queue.TryPopAvail(Memory, out _));
        Assert.Equal(QueueError.None, queue.Error);
    }

    [Fact]
    public void AvailIndexMovedFurtherThanTheQueueSize_BreaksTheQueue()
    {
        var driver = new FakeDriver(Memory, 16);
        SplitVirtqueue queue = driver.CreateQueue();
        driver.SetAvailIdx(17);
        Assert.Equal(PopResult.Broken, queue.TryPopAvail(Memory, out _));
        Assert.Equal(QueueError.AvailIndexTooFar, queue.Error);
        Assert.Equal(PopResult.Broken, queue.TryPopAvail(Memory, out _)); // sticky
        Assert.False(queue.NeedsNotification(Memory));
    }

    [Fact]
    public void HeadIndexOutOfRange_BreaksTheQueue()
    {
        var driver = new FakeDriver(Memory, 16);
        SplitVirtqueue queue = driver.CreateQueue();
        driver.SetAvailRingEntry(0, 16);
        driver.SetAvailIdx(1);
        Assert.Equal(PopResult.Broken, queue.TryPopAvail(Memory, out _));
        Assert.Equal(QueueError.HeadOutOfRange, queue.Error);
        Assert.Equal(QueueError.None, queue.Validate(Memory)); // the control plane may revalidate after a reset
    }

    [Fact]
    public void RingsInMemoryThatWentAway_BreakTheQueueWithoutThrowing()
    {
        var driver = new FakeDriver(Memory, 16);
        SplitVirtqueue queue = driver.CreateQueue();
        driver.AddChain((Data, 16, false));
        GuestMemory empty = GuestMemoryMap.CreateEmpty().Memory; // a memory table that no longer has the rings
        Assert.Equal(PopResult.Broken, queue.TryPopAvail(empty, out _));
        Assert.Equal(QueueError.RingInaccessible, queue.Error);
        Assert.True(queue.NeedsNotification(empty));
        Assert.Equal(QueueError.DescTableOutsideMemory, queue.Validate(empty));
    }

    [Fact]
    public void AddUsed_RefusesAHeadOutsideTheQueue()
    {
        var driver = new FakeDriver(Memory, 16);
        SplitVirtqueue queue = driver.CreateQueue();
        Assert.False(queue.AddUsed(Memory, 16, 0));
        Assert.Equal(0, driver.UsedIdx);
    }

    [Fact]
    public void RoundTrip_DriverSeesEveryCompletionInOrder()
    {
        var driver = new FakeDriver(Memory, 16);
        SplitVirtqueue queue = driver.CreateQueue();
        ushort a = driver.AddChain((Data, 16, false), (Data + 0x1000, 512, true), (Data + 0x2000, 1, true));
        ushort b = driver.AddIndirectChain(0x104000, (Data + 0x3000, 16, false), (Data + 0x4000, 1, true));

        Assert.Equal(PopResult.Chain, queue.TryPopAvail(Memory, out DescriptorChain first));
        Assert.Equal(PopResult.Chain, queue.TryPopAvail(Memory, out DescriptorChain second));
        Assert.Equal(PopResult.Empty, queue.TryPopAvail(Memory, out _));
        Assert.Equal((a, b), (first.Head, second.Head));

        Assert.True(queue.AddUsed(Memory, second.Head, 1)); // completion order is the device's choice
        Assert.True(queue.AddUsed(Memory, first.Head, 513));
        Assert.True(driver.TryTakeUsed(out uint id, out uint length));
        Assert.Equal((b, 1u), ((ushort)id, length));
        Assert.True(driver.TryTakeUsed(out id, out length));
        Assert.Equal((a, 513u), ((ushort)id, length));
        Assert.False(driver.TryTakeUsed(out _, out _));
        Assert.Equal(2, queue.NextAvail);
        Assert.Equal(2, queue.NextUsed);
    }

    [Fact]
    public void Indices_WrapAroundAt65536()
    {
        var driver = new FakeDriver(Memory, 4);
        SplitVirtqueue queue = driver.CreateQueue();
        queue.SetIndices(65533, 65533);
        Assert.Equal(QueueError.None, queue.Validate(Memory));
        driver.StartAt(65533);

        for (int i = 0; i < 10; i++)
        {
            ushort head = driver.AddChain((Data + (ulong)(i * 16), 16, true));
            Assert.Equal(PopResult.Chain, queue.TryPopAvail(Memory, out DescriptorChain chain));
            Assert.Equal(head, chain.Head);
            Assert.True(queue.AddUsed(Memory, chain.Head, (uint)i));
            Assert.True(driver.TryTakeUsed(out uint id, out uint length));
            Assert.Equal((head, (uint)i), ((ushort)id, length));
        }

        Assert.Equal(7, queue.NextAvail);
        Assert.Equal(7, driver.UsedIdx);
    }

    [Fact]
    public void ResumeUsedIndex_TakesTheRingsValue()
    {
        var driver = new FakeDriver(Memory, 8);
        driver.StartAt(1234);
        var queue = new SplitVirtqueue();
        Assert.False(queue.TryResumeUsedIndexFromRing(Memory)); // not validated yet
        queue = driver.CreateQueue();
        queue.SetIndices(1234, 0);
        Assert.Equal(QueueError.None, queue.Validate(Memory));
        Assert.True(queue.TryResumeUsedIndexFromRing(Memory));
        Assert.Equal(1234, queue.NextUsed);
        ushort head = driver.AddChain((Data, 1, true));
        Assert.Equal(PopResult.Chain, queue.TryPopAvail(Memory, out DescriptorChain chain));
        Assert.True(queue.AddUsed(Memory, chain.Head, 1));
        Assert.True(driver.TryTakeUsed(out uint id, out _));
        Assert.Equal(head, (ushort)id);
        Assert.Equal(1235, driver.UsedIdx);
    }

    private static SplitVirtqueue Configure(uint size, ulong desc, ulong avail, ulong used)
    {
        var queue = new SplitVirtqueue();
        Assert.True(queue.TrySetSize(size));
        queue.SetAddresses(new GuestAddress(desc), new GuestAddress(avail), new GuestAddress(used));
        return queue;
    }
}
