using System.IO.Pipes;
using LibvirtStorage.Service;
using Microsoft.Extensions.Logging.Abstractions;
using Tmds.DBus.Protocol;
using Xunit;

namespace LibvirtStorage.DBus.Tests;

/// <summary>Exports whose states the test sets, as the vhost-user side would report them.</summary>
public sealed class FakeExports : IVolumeExports
{
    private readonly System.Collections.Concurrent.ConcurrentDictionary<Guid, ExportState> _states = new();

    public event Action<Guid>? StateChanged;

    /// <summary>Makes GetState throw, as a bug in an export would.</summary>
    public volatile bool Broken;

    public ExportState GetState(Guid volumeKey) => Broken ? throw new InvalidOperationException("export table broken") : _states.GetValueOrDefault(volumeKey, ExportState.Listening);

    public void Set(Guid key, ExportState state)
    {
        _states[key] = state;
        StateChanged?.Invoke(key);
    }
}

/// <summary>A fixture with fake exports and a short job retention.</summary>
public sealed class LiveStateFixture : BusServerFixture
{
    public FakeExports FakeExports { get; } = new();

    protected override IVolumeExports? Exports => FakeExports;

    protected override TimeSpan JobRetention => TimeSpan.FromSeconds(1);
}

/// <summary>Changes that do not come from calls: guests connecting, jobs progressing and expiring.</summary>
public sealed class LiveStateTests(LiveStateFixture fixture) : IClassFixture<LiveStateFixture>
{
    private const string Volume = "org.lvstor.Storage1.Volume";

    [BusFact]
    public async Task AGuestConnectingIsSignalledAndCounted()
    {
        string path = await fixture.CreateVolumeAsync("live-guest");
        Assert.Equal("listening", (await fixture.GetPropertyAsync(path, Volume, "ExportState")).GetString());
        using SignalLog log = await SignalLog.StartAsync(fixture.Client);

        Guid key = fixture.Service.GetVolume("p", "live-guest").Key;
        fixture.FakeExports.Set(key, ExportState.Connected);
        SignalLog.Signal changed = await log.WaitAsync(s => s.Member == "PropertiesChanged" && s.Path == path && s.Changed.ContainsKey("ExportState"));
        Assert.Equal("connected", changed.Changed["ExportState"].GetString());

        Dictionary<string, VariantValue> status = await fixture.CallAsync(StorageBusServer.RootPath, "org.lvstor.Storage1.Manager", "GetStatus", null, null,
            m => m.GetBodyReader().ReadDictionaryOfStringToVariantValue());
        Assert.Equal(1u, status["ConnectedGuests"].GetUInt32());
        Assert.True(status["Exports"].GetUInt32() >= 1);
        fixture.FakeExports.Set(key, ExportState.Listening);
    }

    [BusFact]
    public async Task BytesDoneIsSignalledAtMostTenTimesASecondAndFinishedJobsGoAway()
    {
        string path = await fixture.CreateVolumeAsync("live-progress", "raw", 64 << 20);
        using SignalLog log = await SignalLog.StartAsync(fixture.Client);
        var started = System.Diagnostics.Stopwatch.StartNew();
        string job;
        using (var pipe = new AnonymousPipeServerStream(PipeDirection.Out))
        {
            job = await fixture.CallPathAsync(path, Volume, "Upload", "htt", (ref MessageWriter w) =>
            {
                w.WriteHandle(pipe.ClientSafePipeHandle);
                w.WriteUInt64(0);
                w.WriteUInt64(0);
            });
            pipe.DisposeLocalCopyOfClientHandle();
            byte[] chunk = new byte[1 << 20];
            chunk.AsSpan().Fill(1);
            for (int i = 0; i < 64; i++)
            {
                await pipe.WriteAsync(chunk);
            }
        }

        await log.WaitAsync(s => s.Member == "Completed" && s.Path == job);
        TimeSpan span = started.Elapsed;
        int progress = log.All.Count(s => s.Member == "PropertiesChanged" && s.Path == job && s.Changed.ContainsKey("BytesDone"));

        // Signals are sent at least 100 ms apart, all within the span this client observed (+1 for the final value).
        Assert.InRange(progress, 1, (int)(span.TotalMilliseconds / 100) + 2);
        Assert.Equal(64UL << 20, (await fixture.GetPropertyAsync(job, "org.lvstor.Storage1.Job", "BytesDone")).GetUInt64());

        // Retention is 1 s here: the job is then removed from the bus.
        await log.WaitAsync(s => s.Member == "InterfacesRemoved" && s.Object == job);
        Assert.DoesNotContain(job, await fixture.ListAsync(StorageBusServer.RootPath, "org.lvstor.Storage1.Manager", "ListJobs"));
    }

    [BusFact]
    public async Task AnUnexpectedExceptionIsAnIoErrorAndTheServerStays()
    {
        await fixture.CreateVolumeAsync("live-broken");
        fixture.FakeExports.Broken = true;
        try
        {
            var error = await Assert.ThrowsAsync<DBusErrorReplyException>(() =>
                fixture.CallAsync(StorageBusServer.RootPath, "org.lvstor.Storage1.Manager", "GetStatus"));
            Assert.Equal("org.lvstor.Storage1.Error.Io", error.ErrorName);
            Assert.Contains("export table broken", error.ErrorMessage);
        }
        finally
        {
            fixture.FakeExports.Broken = false;
        }

        Assert.False(fixture.Server.Completion.IsCompleted);
        await fixture.CallAsync(StorageBusServer.RootPath, "org.lvstor.Storage1.Manager", "GetStatus");
    }

    [BusFact]
    public async Task ASecondServerOnTheSameBusNamesTheOwner()
    {
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() =>
            StorageBusServer.StartAsync(fixture.Bus.Address, fixture.Service, new StorageBusOptions(), NullLoggerFactory.Instance));
        Assert.Contains(StorageBusServer.BusName, error.Message);
        Assert.Contains("already owned by connection :1.", error.Message);

        // The first server is unaffected.
        Assert.Contains(BusServerFixture.PoolPath, await fixture.ListAsync(StorageBusServer.RootPath, "org.lvstor.Storage1.Manager", "ListPools"));
    }
}
