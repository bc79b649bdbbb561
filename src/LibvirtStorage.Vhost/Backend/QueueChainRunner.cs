using System.Runtime.ExceptionServices;
using LibvirtStorage.Vhost.Memory;
using LibvirtStorage.Vhost.Virtqueue;

namespace LibvirtStorage.Vhost.Backend;

/// <summary>
/// Processes the chains one queue worker popped in a round: the worker itself (slot 0) and up to
/// <c>parallel - 1</c> I/O threads owned by this runner (slots 1..) take chains from a shared index until none
/// is left, and <see cref="Run"/> returns when every thread woken for the round is done. The worker then publishes
/// the used entries itself, so the ring stays single-threaded.
/// </summary>
/// <remarks>
/// Owned by one <see cref="VhostUserQueueWorker"/> (threads per queue rather than per export: they start and stop
/// with the queue, so stopping a queue joins exactly the threads that may touch its chains, and one busy queue
/// cannot hold back another's batch). Everything is allocated up front: the chain and result arrays, one
/// semaphore that wakes helpers and one that says the round is over; a round allocates nothing (unless a
/// device throws). A round of one chain, or a runner with no helpers, runs on the worker only: no hand-off.
/// </remarks>
internal sealed class QueueChainRunner : IDisposable
{
    /// <summary>Most threads per queue (worker included).</summary>
    public const int MaxParallel = 64;

    /// <summary>Most chains popped for one round when helpers exist (a bound on the arrays and on the batch barrier).</summary>
    public const int MaxChainsPerRound = 128;

    private readonly int _queueIndex;
    private readonly IVhostUserDevice _device;
    private readonly Thread[] _helpers;
    private readonly SemaphoreSlim _wake = new(0);
    // Semaphores, not ManualResetEventSlim: that one allocates its lock object the first time it blocks.
    private readonly SemaphoreSlim _roundDone = new(0);
    private readonly DescriptorChain[] _chains;
    private readonly uint[] _written;
    private readonly bool[] _completed;
    private GuestMemory? _memory;
    private int _count;
    private int _next;
    private int _pending;
    private ExceptionDispatchInfo? _failure;
    private volatile bool _disposed;

    /// <summary>A runner for queue <paramref name="queueIndex"/> with <paramref name="parallel"/> threads (1..64) in all.</summary>
    public QueueChainRunner(int queueIndex, IVhostUserDevice device, int parallel)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(parallel, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(parallel, MaxParallel);
        _queueIndex = queueIndex;
        _device = device;
        int capacity = parallel == 1 ? 1 : MaxChainsPerRound;
        _chains = new DescriptorChain[capacity];
        _written = new uint[capacity];
        _completed = new bool[capacity];
        _helpers = new Thread[parallel - 1];
        for (int i = 0; i < _helpers.Length; i++)
        {
            int slot = i + 1;
            _helpers[i] = new Thread(() => HelperLoop(slot)) { IsBackground = true, Name = $"vhost-user queue {queueIndex} io {slot}" };
            _helpers[i].Start();
        }
    }

    /// <summary>How many chains the worker may pop for one round (1 without helpers: today's one-at-a-time loop).</summary>
    public int Capacity => _chains.Length;

    /// <summary>The round's chains: the worker pops into elements 0 .. count - 1 before <see cref="Run"/>.</summary>
    public DescriptorChain[] Chains => _chains;

    /// <summary>After <see cref="Run"/>: whether chain <paramref name="index"/> completed, and its used length.</summary>
    public bool TryGetResult(int index, out uint written)
    {
        written = _written[index];
        return _completed[index];
    }

    /// <summary>
    /// Processes <see cref="Chains"/>[0 .. <paramref name="count"/>) under <paramref name="memory"/> (which the
    /// caller's lease keeps mapped) and returns when all threads are done. A device exception stops the round:
    /// chains not started are left undone, the others finish; the first exception is returned (not thrown, so the
    /// caller can publish what completed first).
    /// </summary>
    public ExceptionDispatchInfo? Run(int count, GuestMemory memory)
    {
        _memory = memory;
        _count = count;
        _next = 0;
        _failure = null;
        Array.Clear(_completed, 0, count);
        int woken = Math.Min(count - 1, _helpers.Length);
        if (woken > 0)
        {
            Volatile.Write(ref _pending, woken);
            _wake.Release(woken);
        }

        Work(0);
        if (woken > 0)
            _roundDone.Wait();
        _memory = null;
        return _failure;
    }

    /// <summary>Forgets the round's chains (they reference the leased memory snapshot).</summary>
    public void ClearChains(int count) => Array.Clear(_chains, 0, count);

    /// <summary>Stops and joins the I/O threads; call when no round runs (after the worker thread ended).</summary>
    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        if (_helpers.Length > 0)
            _wake.Release(_helpers.Length);
        foreach (Thread helper in _helpers)
            helper.Join();
        _wake.Dispose();
        _roundDone.Dispose();
    }

    private void HelperLoop(int slot)
    {
        while (true)
        {
            _wake.Wait();
            if (_disposed)
                return;
            Work(slot);
            if (Interlocked.Decrement(ref _pending) == 0)
                _roundDone.Release();
        }
    }

    private void Work(int slot)
    {
        GuestMemory memory = _memory!;
        int i;
        // After a failure no new chain starts: the queue is about to break, as it does after one failed chain today.
        while (Volatile.Read(ref _failure) is null && (i = Interlocked.Increment(ref _next) - 1) < _count)
        {
            try
            {
                _written[i] = _device.ProcessChain(_queueIndex, slot, ref _chains[i], memory);
                _completed[i] = true;
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                Interlocked.CompareExchange(ref _failure, ExceptionDispatchInfo.Capture(ex), null);
            }
        }
    }
}
