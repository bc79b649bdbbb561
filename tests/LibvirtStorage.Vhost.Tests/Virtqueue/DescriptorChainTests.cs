using LibvirtStorage.Vhost.Memory;
using LibvirtStorage.Vhost.Tests.Memory;
using LibvirtStorage.Vhost.Virtqueue;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Virtqueue;

public sealed class DescriptorChainTests : IDisposable
{
    private const ushort Next = VirtqLayout.DescFlagNext;
    private const ushort Write = VirtqLayout.DescFlagWrite;
    private const ushort Indirect = VirtqLayout.DescFlagIndirect;
    private const ulong Data = 0x100000;
    private const ulong Table = 0x104000;

    private readonly FakeGuestMemory _fake = new((0, 0x10000, false), (0x10000, 0x10000, false), (0x100000, 0x10000, false), (0x200000, 0x1000, true));
    private readonly FakeDriver _driver;
    private readonly SplitVirtqueue _queue;

    public DescriptorChainTests()
    {
        _driver = new FakeDriver(_fake.Memory, 16);
        _queue = _driver.CreateQueue();
    }

    public void Dispose()
    {
        Assert.True(_fake.GuardsIntact());
        _fake.Dispose();
    }

    [Fact]
    public void DirectChain_YieldsEveryBufferInOrder()
    {
        ushort head = _driver.AddChain((Data, 16, false), (Data + 0x200, 4096, true), (Data + 0x2000, 1, true));
        DescriptorChain chain = Pop();
        Assert.Equal(head, chain.Head);
        AssertSegments(ref chain, (Data, 16, false), (Data + 0x200, 4096, true), (Data + 0x2000, 1, true));
        Assert.Equal(ChainError.None, chain.Error);
        Assert.False(chain.TryNext(out _)); // stays ended
    }

    [Fact]
    public void Chain_CanBeWalkedTwiceFromACopy()
    {
        _driver.AddChain((Data, 16, false), (Data + 16, 1, true));
        DescriptorChain chain = Pop();
        DescriptorChain again = chain;
        AssertSegments(ref chain, (Data, 16, false), (Data + 16, 1, true));
        AssertSegments(ref again, (Data, 16, false), (Data + 16, 1, true));
    }

    [Fact]
    public void BufferCrossingContiguousRegions_IsAccepted()
    {
        _driver.AddChain((0xff00, 0x200, true));
        DescriptorChain chain = Pop();
        AssertSegments(ref chain, (0xff00, 0x200, true));
    }

    [Fact]
    public void ZeroLengthBuffer_IsAccepted()
    {
        _driver.AddChain((ulong.MaxValue, 0, false));
        DescriptorChain chain = Pop();
        AssertSegments(ref chain, (ulong.MaxValue, 0, false));
    }

    [Theory]
    [InlineData(0x20000ul, 16u, false, (int)ChainError.BufferOutsideMemory)] // gap after the contiguous regions
    [InlineData(0x1fff0ul, 32u, false, (int)ChainError.BufferOutsideMemory)] // starts inside, ends in the gap
    [InlineData(0x10ff00ul, 0x200u, true, (int)ChainError.BufferOutsideMemory)] // runs off an isolated region
    [InlineData(0x90000000ul, 512u, true, (int)ChainError.BufferOutsideMemory)] // outside every region
    [InlineData(ulong.MaxValue - 7, 16u, false, (int)ChainError.BufferWraps)] // wraps around 2^64
    [InlineData(0x200000ul, 16u, true, (int)ChainError.BufferOutsideMemory)] // device-writable in read-only memory
    public void HostileBuffer_EndsTheChainWithAReason(ulong address, uint length, bool write, int expected)
    {
        _driver.AddChain((Data, 16, false), (address, length, write));
        DescriptorChain chain = Pop();
        Assert.True(chain.TryNext(out _));
        Assert.False(chain.TryNext(out DescriptorSegment segment));
        Assert.Equal(default, segment);
        Assert.Equal((ChainError)expected, chain.Error);
    }

    [Fact]
    public void ReadOnlyMemory_IsFineForDeviceReadableBuffers()
    {
        _driver.AddChain((0x200000, 16, false));
        DescriptorChain chain = Pop();
        AssertSegments(ref chain, (0x200000, 16, false));
    }

    [Fact]
    public void LoopingChain_EndsAsTooLong()
    {
        _driver.WriteDescriptor(0, Data, 8, Next, 1);
        _driver.WriteDescriptor(1, Data, 8, Next, 0);
        _driver.Publish(0);
        Assert.Equal(ChainError.TooLong, Drain(Pop(), out int count));
        Assert.Equal(16, count); // exactly the queue size, then the TTL ends it
    }

    [Fact]
    public void SelfLoop_EndsAsTooLong()
    {
        _driver.WriteDescriptor(3, Data, 8, Next, 3);
        _driver.Publish(3);
        Assert.Equal(ChainError.TooLong, Drain(Pop(), out _));
    }

    [Fact]
    public unsafe void ChainOfMoreThan4GiBInTotal_IsRefused()
    {
        // The walk only validates buffers, it never touches their bytes, so an 8 GiB region needs no memory behind
        // it: a phantom region (host pointer never dereferenced) next to a real one for the rings.
        void* rings = System.Runtime.InteropServices.NativeMemory.AllocZeroed(0x10000);
        try
        {
            GuestRegion real = GuestRegion.FromPointer(new GuestAddress(0), 0x10000, 0x7000_0000_0000, (nint)rings);
            GuestRegion phantom = GuestRegion.FromPointer(new GuestAddress(0x1_0000_0000), 0x2_0000_0000, 0x7100_0000_0000, 0x1000);
            Assert.True(GuestMemoryMap.TryCreate([real, phantom], out GuestMemoryMap? map, out _));
            real.Dispose();
            phantom.Dispose();
            GuestMemory memory = map!.Memory;
            var driver = new FakeDriver(memory, 4);
            SplitVirtqueue queue = driver.CreateQueue();

            driver.AddChain((0x1_0000_0000, uint.MaxValue, false), (0x2_0000_0000, 0, true)); // exactly 2^32 - 1: fine
            Assert.Equal(PopResult.Chain, queue.TryPopAvail(memory, out DescriptorChain chain));
            Assert.Equal(ChainError.None, Drain(chain, out int count));
            Assert.Equal(2, count);

            driver.AddChain((0x1_0000_0000, 0x8000_0000, false), (0x1_8000_0000, 0x8000_0000, true)); // 2^32
            Assert.Equal(PopResult.Chain, queue.TryPopAvail(memory, out chain));
            Assert.Equal(ChainError.TooManyBytes, Drain(chain, out count));
            Assert.Equal(1, count);
            map.Release();
        }
        finally
        {
            System.Runtime.InteropServices.NativeMemory.Free(rings);
        }
    }

    [Fact]
    public void NextIndexBeyondTheTable_IsRefused()
    {
        _driver.WriteDescriptor(0, Data, 8, Next, 16);
        _driver.Publish(0);
        Assert.Equal(ChainError.IndexOutOfRange, Drain(Pop(), out int count));
        Assert.Equal(1, count);
    }

    [Fact]
    public void ReadableAfterWritable_IsRefused()
    {
        _driver.AddChain((Data, 16, true), (Data + 16, 16, false));
        Assert.Equal(ChainError.ReadableAfterWritable, Drain(Pop(), out _));
    }

    [Fact]
    public void IndirectTable_YieldsItsBuffersAndIgnoresTheWriteFlagOfItsPointer()
    {
        _driver.AddIndirectChain(Table, (Data, 16, false), (Data + 0x1000, 512, true), (Data + 0x2000, 1, true));
        DescriptorChain chain = Pop();
        AssertSegments(ref chain, (Data, 16, false), (Data + 0x1000, 512, true), (Data + 0x2000, 1, true));

        FakeDriver.WriteDescriptorAt(_fake.Memory, Table, 0, Data, 16, 0);
        _driver.WriteDescriptor(5, Table, 16, Indirect | Write);
        _driver.Publish(5);
        chain = Pop();
        AssertSegments(ref chain, (Data, 16, false));
    }

    [Fact]
    public void DirectBuffersFollowedByAnIndirectTable_AreAccepted()
    {
        FakeDriver.WriteDescriptorAt(_fake.Memory, Table, 0, Data + 0x100, 8, Write);
        _driver.WriteDescriptor(7, Data, 16, Next, 8);
        _driver.WriteDescriptor(8, Table, 16, Indirect);
        _driver.Publish(7);
        DescriptorChain chain = Pop();
        AssertSegments(ref chain, (Data, 16, false), (Data + 0x100, 8, true));
    }

    [Fact]
    public void IndirectInsideIndirect_IsRefused()
    {
        FakeDriver.WriteDescriptorAt(_fake.Memory, Table, 0, Data, 16, Next, 1);
        FakeDriver.WriteDescriptorAt(_fake.Memory, Table, 1, Table + 0x100, 16, Indirect);
        _driver.WriteDescriptor(0, Table, 32, Indirect);
        _driver.Publish(0);
        Assert.Equal(ChainError.NestedIndirect, Drain(Pop(), out int count));
        Assert.Equal(1, count);
    }

    [Fact]
    public void IndirectWithNext_IsRefused()
    {
        FakeDriver.WriteDescriptorAt(_fake.Memory, Table, 0, Data, 16, 0);
        _driver.WriteDescriptor(0, Table, 16, Indirect | Next, 1);
        _driver.Publish(0);
        Assert.Equal(ChainError.IndirectWithNext, Drain(Pop(), out _));
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(8u)]
    [InlineData(17u)]
    [InlineData(16u * 1025)] // more entries than max(queue size, 1024)
    public void IndirectTableWithABadLength_IsRefused(uint length)
    {
        _driver.WriteDescriptor(0, Table, length, Indirect);
        _driver.Publish(0);
        Assert.Equal(ChainError.BadIndirectLength, Drain(Pop(), out _));
    }

    [Theory]
    [InlineData(0x1fff0ul)] // runs into the gap
    [InlineData(0x50000ul)]
    [InlineData(ulong.MaxValue - 15)]
    public void IndirectTableOutsideMemory_IsRefused(ulong table)
    {
        _driver.WriteDescriptor(0, table, 32, Indirect);
        _driver.Publish(0);
        Assert.Equal(ChainError.IndirectTableOutsideMemory, Drain(Pop(), out _));
    }

    [Fact]
    public void LoopInsideAnIndirectTable_EndsAsTooLong()
    {
        FakeDriver.WriteDescriptorAt(_fake.Memory, Table, 0, Data, 8, Next, 1);
        FakeDriver.WriteDescriptorAt(_fake.Memory, Table, 1, Data, 8, Next, 0);
        _driver.WriteDescriptor(0, Table, 32, Indirect);
        _driver.Publish(0);
        Assert.Equal(ChainError.TooLong, Drain(Pop(), out int count));
        Assert.Equal(2, count); // a table of 2 entries yields at most 2 buffers
    }

    [Fact]
    public void IndirectNextBeyondItsTable_IsRefused()
    {
        FakeDriver.WriteDescriptorAt(_fake.Memory, Table, 0, Data, 8, Next, 2); // table has 2 entries
        _driver.WriteDescriptor(0, Table, 32, Indirect);
        _driver.Publish(0);
        Assert.Equal(ChainError.IndexOutOfRange, Drain(Pop(), out _));
    }

    [Fact]
    public void IndirectTablesMayBeLongerThanTheQueue_AsLinuxSendsThem()
    {
        // Linux's virtio_blk sizes indirect tables by seg_max + 2, not by the queue size (16 here):
        // 1 direct buffer + a 20-entry indirect table is a valid request, as QEMU accepts it.
        const ulong far = Table + 0x1000;
        for (int i = 0; i < 20; i++)
        {
            FakeDriver.WriteDescriptorAt(_fake.Memory, far, i, Data, 8, (ushort)(i < 19 ? Next : 0), (ushort)(i + 1));
        }

        _driver.WriteDescriptor(0, Data, 8, Next, 1);
        _driver.WriteDescriptor(1, far, 20 * 16, Indirect);
        _driver.Publish(0);
        Assert.Equal(ChainError.None, Drain(Pop(), out int count));
        Assert.Equal(21, count);
    }

    private DescriptorChain Pop()
    {
        Assert.Equal(PopResult.Chain, _queue.TryPopAvail(_fake.Memory, out DescriptorChain chain));
        return chain;
    }

    private static ChainError Drain(DescriptorChain chain, out int count)
    {
        count = 0;
        while (chain.TryNext(out _))
        {
            count++;
            Assert.True(count <= 32768, "the walk did not end");
        }

        return chain.Error;
    }

    private static void AssertSegments(ref DescriptorChain chain, params (ulong Address, uint Length, bool Write)[] expected)
    {
        foreach (var e in expected)
        {
            Assert.True(chain.TryNext(out DescriptorSegment segment), chain.Error.ToString());
            Assert.Equal(new DescriptorSegment(new GuestAddress(e.Address), e.Length, e.Write), segment);
        }

        Assert.False(chain.TryNext(out _));
        Assert.Equal(ChainError.None, chain.Error);
    }
}
