using Xunit;
using Xunit.Abstractions;

namespace LibvirtStorage.Guest.Tests;

/// <summary>
/// The real test guest (Debian's kernel, busybox, fio) boots under QEMU with vhost-user-blk-pci on lvstor-vhost-blk
/// exporting a qcow2 overlay over a raw base. Each script checks the guest's own verdict, then `qemu-img check`
/// and qemu-io over every byte of the disk (tests/guest/README.md). One guest at a time: they share 2 cores.
/// </summary>
[Collection("guest")]
public sealed class OurBackendGuestTests(ITestOutputHelper output)
{
    [GuestFact]
    public void WriteVerify_ThenFioWithVerify_OneQueue()
    {
        AssertOk(GuestScript.Run("qsd-smoke.sh", null, "fio"));
    }

    /// <summary>Two queues, and fio at queue depths 1, 4, 8 and 32, random and sequential, 4K to 1M.</summary>
    [GuestFact]
    public void WriteVerify_ThenFioWithVerify_TwoQueues_SeveralDepths()
    {
        var env = new Dictionary<string, string>
        {
            ["LVSTOR_GUEST_QUEUES"] = "2",
            ["LVSTOR_SMOKE_FIO"] = "randwrite:4k:1:8M,randwrite:64k:4:32M,randwrite:4k:32:64M,write:1M:8:128M",
        };
        AssertOk(GuestScript.Run("qsd-smoke.sh", env, "fio"));
    }

    /// <summary>
    /// The back-end is stopped with SIGTERM in the middle of fio (it flushes and exits) and started again on the same
    /// socket; QEMU (reconnect=1) reconnects and fio finishes with zero verify errors.
    /// </summary>
    [GuestFact]
    public void GracefulBackendRestart_MidFio_GuestCarriesOn()
    {
        AssertOk(GuestScript.Run("reconnect.sh", null, "graceful"));
    }

    /// <summary>
    /// kill -9 of a write-through back-end in the middle of fio, then a new one: the requests in flight at the kill
    /// are resubmitted from the inflight area (INFLIGHT_SHMFD) and fio finishes with zero verify errors.
    /// </summary>
    [GuestFact]
    public void KilledBackend_MidFio_InflightRequestsAreResubmitted()
    {
        AssertOk(GuestScript.Run("reconnect.sh", null, "kill"));
    }

    /// <summary>
    /// Live resize: the export grows from 1 GiB to 1.5 GiB through the back-end's control socket while the guest has
    /// I/O in flight; the guest sees the new size without a reboot and writes across the old end and in the new tail.
    /// </summary>
    [GuestFact]
    public void LiveResize_GuestSeesTheNewCapacityAndWritesPastTheOldEnd()
    {
        AssertOk(GuestScript.Run("resize.sh"));
    }

    /// <summary>
    /// The whole service: lvstord on a private bus exports a volume made with the lvstor CLI; two `lvstor snapshot`
    /// calls while the guest's fio writes (random 4K, then 1M sequential) switch the export to a new overlay
    /// between requests. fio verifies everything it wrote through the chain; qemu-img check is clean on all layers.
    /// </summary>
    [GuestFact]
    public void LiveSnapshots_ThroughLvstord_WhileFioVerifies()
    {
        GuestScriptResult result = GuestScript.Run("snapshot.sh");
        Assert.Contains("snapshot: ok (2 live snapshots", result.Output, StringComparison.Ordinal);
        AssertOk(result);
    }

    /// <summary>
    /// Live stream and commit through lvstord: 64 MiB uploaded into snapshot s1's layer, then, while the guest's fio
    /// writes (random 4K, then 1M sequential), `lvstor stream` copies that layer into the top and drops it, a snapshot
    /// s2 is taken and `lvstor commit` merges the top into s2's layer, which becomes the top. fio verifies everything
    /// it wrote; one layer is left, qemu-img check is clean and the uploaded data is intact.
    /// </summary>
    [GuestFact]
    public void LiveStreamAndCommit_ThroughLvstord_WhileFioVerifies()
    {
        GuestScriptResult result = GuestScript.Run("stream-commit.sh");
        Assert.Contains("stream-commit: ok (stream and commit during fio", result.Output, StringComparison.Ordinal);
        AssertOk(result);
    }

    /// <summary>
    /// tests/guest/clone-move.sh: a TCG guest on a linked clone runs fio with crc32c verify while lvstord makes a full
    /// clone of its running disk and then moves the shared base to another pool; the guest verifies everything it wrote,
    /// its disk reads the moved base, the clone stands alone, and qemu-img check is clean on every file.
    /// </summary>
    [GuestFact]
    public void LiveCloneAndBaseMove_ThroughLvstord_WhileFioVerifies()
    {
        GuestScriptResult result = GuestScript.Run("clone-move.sh");
        Assert.Contains("clone-move: ok (live clone and base move during fio", result.Output, StringComparison.Ordinal);
        AssertOk(result);
    }

    /// <summary>CI's short soak: a few boots in a row under the watchdog, counted; `make soak` runs 30.</summary>
    [GuestFact]
    public void ShortSoak_NoHangNoFailure()
    {
        string script = Path.Combine(GuestEnvironment.ScriptDir, "qsd-smoke.sh");
        GuestScriptResult result = GuestScript.Run("soak.sh", null, "3", script, "fio");
        string summary = result.Output.Split('\n').LastOrDefault(l => l.StartsWith("soak: runs=", StringComparison.Ordinal)) ?? "(no summary line)";
        output.WriteLine(summary);
        Assert.Contains("soak: runs=3 ok=3 fail=0 hang=0", result.Output, StringComparison.Ordinal);
        AssertOk(result);
    }

    private void AssertOk(GuestScriptResult result)
    {
        output.WriteLine(result.Output);
        Assert.True(result.ExitCode == 0, $"guest test {result.Verdict}; its output is in the test log");
    }
}
