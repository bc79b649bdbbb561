using LibvirtStorage.Vhost.Frontend;

namespace LibvirtStorage.Bench.Vhost;

/// <summary>
/// Keeps one queue at its depth until told to stop: refill every free slot, publish (one kick at most), wait for
/// completions, count them. Random offsets come from a per-queue xorshift; sequential queues each walk their own
/// share of the disk (queue q starts at q/N of it, as fio's offset_increment does). Nothing allocates in the loop.
/// </summary>
internal sealed class QueueLoad
{
    private readonly VhostUserBlkQueue _queue;
    private readonly VhostPattern _pattern;
    private readonly ulong _sectorsPerRequest, _requests, _firstRequest;
    private ulong _rng, _next;
    private long _completed, _failed;
    private volatile bool _stop;

    public QueueLoad(VhostUserBlkQueue queue, VhostPattern pattern, long capacityBytes, int queueIndex)
    {
        _queue = queue;
        _pattern = pattern;
        _sectorsPerRequest = (ulong)pattern.RequestSize / 512;
        ulong total = (ulong)capacityBytes / (ulong)pattern.RequestSize;
        _requests = pattern.Random ? total : total / (ulong)pattern.Queues;
        _firstRequest = pattern.Random ? 0 : _requests * (ulong)queueIndex;
        _rng = 0x9E3779B97F4A7C15ul * (ulong)(queueIndex + 1);
    }

    public long Completed => Volatile.Read(ref _completed);

    public long Failed => Volatile.Read(ref _failed);

    public Exception? Error { get; private set; }

    public void Stop() => _stop = true;

    public void Run()
    {
        try
        {
            Loop();
        }
        catch (Exception e) when (e is TimeoutException or InvalidDataException or IOException)
        {
            Error = e;
        }
    }

    private void Loop()
    {
        if (_pattern.IsWrite)
        {
            for (int slot = 0; slot < _queue.Depth; slot++)
                _queue.Data(slot)[.._pattern.RequestSize].Fill(0x5a);
        }

        Span<BlkCompletion> done = stackalloc BlkCompletion[_queue.Depth];
        int depth = Math.Min(_pattern.Depth, _queue.Depth);
        while (!_stop)
        {
            while (_queue.InFlight < depth && _queue.TryAcquireSlot(out int slot))
                _queue.Submit(slot, _pattern.Type, NextRequest() * _sectorsPerRequest, _pattern.RequestSize);
            int n = _queue.WaitForCompletions(done);
            int failed = 0;
            for (int i = 0; i < n; i++)
            {
                if (!done[i].IsOk)
                    failed++;
            }

            Volatile.Write(ref _completed, _completed + n);
            if (failed > 0)
                Volatile.Write(ref _failed, _failed + failed);
        }

        while (_queue.InFlight > 0)
            _queue.WaitForCompletions(done);
    }

    private ulong NextRequest()
    {
        if (_pattern.Random)
        {
            // xorshift64: cheap, allocation-free, and the same sequence for both back-ends.
            _rng ^= _rng << 13;
            _rng ^= _rng >> 7;
            _rng ^= _rng << 17;
            return _rng % _requests;
        }

        ulong request = _firstRequest + _next;
        _next = (_next + 1) % _requests;
        return request;
    }
}
