using LibvirtStorage.Vhost.Memory;
using LibvirtStorage.Vhost.Tests.Memory;
using LibvirtStorage.Vhost.Virtqueue;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Virtqueue;

/// <summary>Kick and call suppression, with and without VIRTIO_F_EVENT_IDX (virtio 1.2 §2.7.7, §2.7.10).</summary>
public sealed class NotificationTests : IDisposable
{
    private const ulong Data = 0x100000;
    private readonly FakeGuestMemory _fake = FakeGuestMemory.Standard();

    private GuestMemory Memory => _fake.Memory;

    public void Dispose()
    {
        Assert.True(_fake.GuardsIntact());
        _fake.Dispose();
    }

    [Theory]
    [InlineData(0, 1, 0, true)] // used idx moved 0 → 1 past used_event 0
    [InlineData(5, 2, 1, false)] // 1 → 2 stays before 5
    [InlineData(5, 6, 2, true)] // 2 → 6 crosses 5
    [InlineData(5, 5, 2, false)] // 2 → 5: used_event 5 means "after the entry at 5"
    [InlineData(65535, 1, 65534, true)] // across the 16-bit wrap
    [InlineData(3, 3, 3, false)] // nothing new
    public void NeedEvent_IsVringNeedEvent(int eventIdx, int newIdx, int old, bool expected) =>
        Assert.Equal(expected, VirtqLayout.NeedEvent((ushort)eventIdx, (ushort)newIdx, (ushort)old));

    [Fact]
    public void WithoutEventIdx_NoInterruptFlagSuppressesCalls()
    {
        var driver = new FakeDriver(Memory, 16);
        SplitVirtqueue queue = driver.CreateQueue();
        Complete(queue, driver.AddChain((Data, 1, true)));
        Assert.True(queue.NeedsNotification(Memory));
        driver.SetAvailFlags(VirtqLayout.AvailFlagNoInterrupt);
        Complete(queue, driver.AddChain((Data, 1, true)));
        Assert.False(queue.NeedsNotification(Memory));
        driver.SetAvailFlags(0);
        Assert.True(queue.NeedsNotification(Memory));
    }

    [Fact]
    public void WithoutEventIdx_NoNotifyFlagSuppressesKicksWhileBusy()
    {
        var driver = new FakeDriver(Memory, 16);
        SplitVirtqueue queue = driver.CreateQueue();
        driver.AddChain((Data, 1, true));
        Assert.Equal(1, driver.Kicks);

        queue.DisableNotification(Memory);
        Assert.Equal(VirtqLayout.UsedFlagNoNotify, driver.UsedFlags);
        driver.AddChain((Data, 1, true)); // arrives while the device is busy: no kick needed
        Assert.Equal(1, driver.Kicks);

        Assert.Equal(2, Drain(queue));
        Assert.False(queue.EnableNotification(Memory));
        Assert.Equal(0, driver.UsedFlags);
        driver.AddChain((Data, 1, true));
        Assert.Equal(2, driver.Kicks);
    }

    [Fact]
    public void EnableNotification_ReportsChainsThatArrivedMeanwhile()
    {
        foreach (bool eventIdx in new[] { false, true })
        {
            ulong rings = eventIdx ? 0x10000ul : 0; // fresh rings for each mode
            var driver = new FakeDriver(Memory, 16, rings, rings + 0x4000, rings + 0x8000);
            SplitVirtqueue queue = driver.CreateQueue(eventIdx);
            queue.DisableNotification(Memory);
            Assert.False(queue.EnableNotification(Memory));
            queue.DisableNotification(Memory);
            driver.AddChain((Data, 1, true)); // lands between the last pop and re-enabling
            Assert.True(queue.EnableNotification(Memory));
            Assert.Equal(1, Drain(queue));
            Assert.False(queue.EnableNotification(Memory));
        }
    }

    [Fact]
    public void WithEventIdx_CallsOnlyWhenUsedIdxCrossesUsedEvent()
    {
        var driver = new FakeDriver(Memory, 16);
        SplitVirtqueue queue = driver.CreateQueue(eventIdx: true);
        driver.SetUsedEvent(0);
        Complete(queue, driver.AddChain((Data, 1, true)));
        Assert.True(queue.NeedsNotification(Memory)); // first time: always

        driver.SetUsedEvent(5);
        Complete(queue, driver.AddChain((Data, 1, true))); // used idx 1 → 2
        Assert.False(queue.NeedsNotification(Memory));
        for (int i = 0; i < 3; i++)
        {
            Complete(queue, driver.AddChain((Data, 1, true))); // 2 → 5
        }

        Assert.False(queue.NeedsNotification(Memory));
        Complete(queue, driver.AddChain((Data, 1, true))); // 5 → 6 crosses used_event 5
        Assert.True(queue.NeedsNotification(Memory));
        Assert.False(queue.NeedsNotification(Memory)); // nothing new since
        Assert.False(driver.UsedFlags != 0); // EVENT_IDX never touches the flags
    }

    [Fact]
    public void WithEventIdx_AvailEventSuppressesKicksUntilTheDeviceAsksAgain()
    {
        var driver = new FakeDriver(Memory, 16);
        SplitVirtqueue queue = driver.CreateQueue(eventIdx: true);
        driver.EventIdx = true;
        driver.AddChain((Data, 1, true)); // avail_event 0: 0 → 1 crosses it
        Assert.Equal(1, driver.Kicks);
        queue.DisableNotification(Memory);
        driver.AddChain((Data, 1, true)); // 1 → 2 does not cross avail_event 0
        Assert.Equal(1, driver.Kicks);

        Assert.Equal(2, Drain(queue));
        Assert.False(queue.EnableNotification(Memory));
        Assert.Equal(2, driver.AvailEvent);
        driver.AddChain((Data, 1, true)); // 2 → 3 crosses avail_event 2
        Assert.Equal(2, driver.Kicks);
    }

    [Theory]
    [InlineData(false, 16, 200)]
    [InlineData(true, 16, 200)]
    [InlineData(false, 4, 50)]
    [InlineData(true, 4, 50)]
    public void WorkerLoop_NeverLosesAKickOrACall(bool eventIdx, int size, int rounds)
    {
        var driver = new FakeDriver(Memory, (ushort)size) { EventIdx = eventIdx };
        SplitVirtqueue queue = driver.CreateQueue(eventIdx);
        var random = new Random(size * 7 + (eventIdx ? 1 : 0));
        int submitted = 0, completed = 0, outstanding = 0;
        for (int round = 0; round < rounds; round++)
        {
            // The driver asks for a call after its next completion, as Linux does after draining the used ring.
            if (eventIdx)
            {
                driver.SetUsedEvent(driver.LastUsedSeen);
            }

            int kicksBefore = driver.Kicks;
            int batch = random.Next(1, size - outstanding + 1);
            for (int i = 0; i < batch; i++)
            {
                driver.AddChain((Data + (ulong)(i * 64), 16, false), (Data + 0x8000 + (ulong)i, 1, true));
                submitted++;
                outstanding++;
            }

            // The device was idle with notifications enabled, so the batch must have kicked it.
            Assert.True(driver.Kicks > kicksBefore, $"round {round}: lost kick");

            // Device: one worker wake-up.
            queue.DisableNotification(Memory);
            do
            {
                outstanding -= Drain(queue);
            }
            while (queue.EnableNotification(Memory));

            Assert.Equal(0, outstanding);
            Assert.True(queue.NeedsNotification(Memory), $"round {round}: lost call");
            while (driver.TryTakeUsed(out uint id, out uint length))
            {
                Assert.True(id < size);
                Assert.Equal(1u, length);
                completed++;
            }
        }

        Assert.Equal(submitted, completed);
    }

    private int Drain(SplitVirtqueue queue)
    {
        int count = 0;
        while (queue.TryPopAvail(Memory, out DescriptorChain chain) == PopResult.Chain)
        {
            uint written = 0;
            while (chain.TryNext(out DescriptorSegment segment))
            {
                written += segment.Writable ? segment.Length : 0;
            }

            Assert.Equal(ChainError.None, chain.Error);
            Assert.True(queue.AddUsed(Memory, chain.Head, written));
            count++;
        }

        Assert.Equal(QueueError.None, queue.Error);
        return count;
    }

    private void Complete(SplitVirtqueue queue, ushort head)
    {
        Assert.Equal(PopResult.Chain, queue.TryPopAvail(Memory, out DescriptorChain chain));
        Assert.Equal(head, chain.Head);
        Assert.True(queue.AddUsed(Memory, chain.Head, 1));
    }
}
