using Xunit;

namespace LibvirtStorage.Libvirt.Tests;

/// <summary>vol-* commands through libvirt on a vstorage pool: every answer comes from lvstord.</summary>
[Collection(LibvirtCollection.Name)]
public sealed class VolumeTests(LibvirtWorld world)
{
    private const long MiB = 1024 * 1024;

    private VolumeXml Dump(string pool, string vol) => VolumeXml.Parse(world.VirshOk("vol-dumpxml", "--pool", pool, vol));

    [LibvirtFact]
    public void Vol_create_as_raw_and_qcow2_report_format_capacity_and_the_socket_as_path()
    {
        world.Up();
        string pool = world.StartPool();

        Assert.Contains("Vol disk.raw created", world.VirshOk("vol-create-as", pool, "disk.raw", "16M", "--format", "raw"));
        Assert.Contains("Vol disk.qcow2 created", world.VirshOk("vol-create-as", pool, "disk.qcow2", "1G", "--format", "qcow2"));

        VolumeXml raw = Dump(pool, "disk.raw");
        Assert.Equal(16 * MiB, raw.Capacity);
        Assert.Equal("raw", raw.Format);
        VolumeXml qcow2 = Dump(pool, "disk.qcow2");
        Assert.Equal(1024 * MiB, qcow2.Capacity);
        Assert.Equal("qcow2", qcow2.Format);
        Assert.True(qcow2.Allocation < 16 * MiB, $"a new qcow2 volume should be sparse, allocation {qcow2.Allocation}");
        Assert.Empty(qcow2.BackingChain);

        // vol-path is lvstord's vhost-user-blk socket, never the image file; the socket exists.
        string path = world.VirshOk("vol-path", "--pool", pool, "disk.qcow2").Trim();
        Assert.Equal($"{LibvirtWorld.RuntimeDir}/{pool}/disk.qcow2.sock", path);
        Assert.Equal(path, qcow2.Path);
        Assert.Equal(0, world.Exec("test", "-S", path).ExitCode);

        (long cap, long alloc) = VolumeXml.ParseInfo(world.VirshOk("vol-info", "--bytes", "--pool", pool, "disk.raw"));
        Assert.Equal(16 * MiB, cap);
        Assert.Equal(raw.Allocation, alloc);

        string list = world.VirshOk("vol-list", pool, "--details");
        Assert.Contains("disk.raw", list);
        Assert.Contains("disk.qcow2", list);
    }

    [LibvirtFact]
    public void Vol_create_from_xml_makes_qcow2_and_snapshots_whose_whole_chain_dumpxml_shows()
    {
        world.Up();
        string pool = world.StartPool();
        string xmlDir = Directory.CreateDirectory(Path.Combine(world.Work, "xml", pool)).FullName;

        string baseXml = Path.Combine(xmlDir, "base.xml");
        File.WriteAllText(baseXml, """
            <volume>
              <name>base.qcow2</name>
              <capacity unit='M'>64</capacity>
              <target><format type='qcow2'/></target>
            </volume>
            """);
        Assert.Contains("Vol base.qcow2 created", world.VirshOk("vol-create", pool, baseXml));
        VolumeXml b = Dump(pool, "base.qcow2");
        Assert.Equal("qcow2", b.Format);
        Assert.Equal(64 * MiB, b.Capacity);

        // A snapshot (linked clone): a qcow2 volume whose backingStore is the base's path (its socket).
        string snap1 = Path.Combine(xmlDir, "snap1.xml");
        File.WriteAllText(snap1, $"""
            <volume>
              <name>snap1.qcow2</name>
              <capacity unit='M'>64</capacity>
              <target><format type='qcow2'/></target>
              <backingStore><path>{b.Path}</path><format type='qcow2'/></backingStore>
            </volume>
            """);
        world.VirshOk("vol-create", pool, snap1);
        VolumeXml s1 = Dump(pool, "snap1.qcow2");
        Assert.Equal("qcow2", s1.Format);
        Assert.Equal(b.Path, Assert.Single(s1.BackingChain).Path);

        string snap2 = Path.Combine(xmlDir, "snap2.xml");
        File.WriteAllText(snap2, $"""
            <volume>
              <name>snap2.qcow2</name>
              <capacity unit='M'>64</capacity>
              <target><format type='qcow2'/></target>
              <backingStore><path>{s1.Path}</path><format type='qcow2'/></backingStore>
            </volume>
            """);
        world.VirshOk("vol-create", pool, snap2);

        // After a refresh libvirt knows only what lvstord reports: the chain comes from lvstord, not from the XML.
        world.VirshOk("pool-refresh", pool);
        VolumeXml s2 = Dump(pool, "snap2.qcow2");
        Assert.NotEmpty(s2.BackingChain);
        Assert.Equal(s1.Path, s2.BackingChain[0].Path);
        Assert.Equal("qcow2", s2.BackingChain[0].Format);
        // libvirt 9.0's volume XML holds one backing level; the rest of the chain is followed by path, each hop
        // answered from lvstord: snap2 -> snap1 -> base -> nothing.
        var chain = new List<string>();
        for (VolumeXml? v = s2; v.BackingChain.Count > 0; v = VolumeXml.Parse(world.VirshOk("vol-dumpxml", v.BackingChain[0].Path)))
            chain.Add(v.BackingChain[0].Path);
        Assert.Equal([s1.Path!, b.Path!], chain);

        // The base is in use by its snapshots: lvstord refuses to delete it and says why.
        CommandResult del = world.Virsh("vol-delete", "--pool", pool, "base.qcow2");
        Assert.NotEqual(0, del.ExitCode);
        Assert.Contains("error:", del.Stderr);
        Assert.Contains("snap1.qcow2", del.Stderr);
        Assert.Contains("base.qcow2", world.VirshOk("vol-list", pool));
    }

    [LibvirtFact]
    public void Chains_changed_by_lvstor_stream_and_commit_show_in_vol_dumpxml()
    {
        world.Up();
        string pool = world.StartPool();
        world.VirshOk("vol-create-as", pool, "base.qcow2", "8M", "--format", "qcow2");
        string data = RandomFile(1 * MiB);
        world.VirshOk("vol-upload", "--pool", pool, "base.qcow2", data);
        world.VirshOk("vol-create-as", pool, "top.qcow2", "8M", "--format", "qcow2", "--backing-vol", "base.qcow2", "--backing-vol-format", "qcow2");
        Assert.Single(Dump(pool, "top.qcow2").BackingChain);

        // Stream the base into the top (lvstor, on the namespace's system bus): libvirt then shows no backing store,
        // the data is still there, and the base is free to go.
        string lvstor = Path.Combine(AppContext.BaseDirectory, "lvstor");
        CommandResult stream = world.Exec(lvstor, "stream", "top.qcow2", "--pool", pool);
        Assert.True(stream.ExitCode == 0, $"lvstor stream failed:\n{stream}");
        world.VirshOk("pool-refresh", pool);
        Assert.Empty(Dump(pool, "top.qcow2").BackingChain);
        world.VirshOk("vol-delete", "--pool", pool, "base.qcow2");
        string back = Path.Combine(world.Work, world.Unique("streamed"));
        world.VirshOk("vol-download", "--pool", pool, "top.qcow2", back, "--length", MiB.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(File.ReadAllBytes(data), File.ReadAllBytes(back));

        // A snapshot puts a layer under the top; a commit merges the top back into it.
        Assert.Equal(0, world.Exec(lvstor, "snapshot", "top.qcow2", "s1", "--pool", pool).ExitCode);
        world.VirshOk("pool-refresh", pool);
        Assert.Single(Dump(pool, "top.qcow2").BackingChain);
        CommandResult commit = world.Exec(lvstor, "commit", "top.qcow2", "--pool", pool, "--json");
        Assert.True(commit.ExitCode == 0, $"lvstor commit failed:\n{commit}");
        world.VirshOk("pool-refresh", pool);
        Assert.Empty(Dump(pool, "top.qcow2").BackingChain);
        world.VirshOk("vol-download", "--pool", pool, "top.qcow2", back, "--length", MiB.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(File.ReadAllBytes(data), File.ReadAllBytes(back));
    }

    [LibvirtFact]
    public void Vol_create_as_with_a_backing_volume_makes_a_snapshot_that_reads_the_base()
    {
        world.Up();
        string pool = world.StartPool();
        world.VirshOk("vol-create-as", pool, "base.raw", "8M", "--format", "raw");
        string data = RandomFile(1 * MiB);
        world.VirshOk("vol-upload", "--pool", pool, "base.raw", data);

        world.VirshOk("vol-create-as", pool, "top.qcow2", "8M", "--format", "qcow2", "--backing-vol", "base.raw", "--backing-vol-format", "raw");
        VolumeXml top = Dump(pool, "top.qcow2");
        var link = Assert.Single(top.BackingChain);
        Assert.Equal($"{LibvirtWorld.RuntimeDir}/{pool}/base.raw.sock", link.Path);
        Assert.Equal("raw", link.Format);

        string back = Path.Combine(world.Work, world.Unique("download"));
        world.VirshOk("vol-download", "--pool", pool, "top.qcow2", back, "--length", MiB.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(File.ReadAllBytes(data), File.ReadAllBytes(back));
    }

    [LibvirtFact]
    public void Vol_clone_copies_a_volume_under_a_new_name_with_its_own_socket()
    {
        world.Up();
        string pool = world.StartPool();
        world.VirshOk("vol-create-as", pool, "src.qcow2", "32M", "--format", "qcow2");
        string data = RandomFile(1 * MiB);
        world.VirshOk("vol-upload", "--pool", pool, "src.qcow2", data);

        Assert.Contains("Vol copy.qcow2 cloned from src.qcow2", world.VirshOk("vol-clone", "--pool", pool, "src.qcow2", "copy.qcow2"));
        VolumeXml copy = Dump(pool, "copy.qcow2");
        Assert.Equal(32 * MiB, copy.Capacity);
        Assert.Equal("qcow2", copy.Format);
        Assert.Equal($"{LibvirtWorld.RuntimeDir}/{pool}/copy.qcow2.sock", copy.Path);

        string back = Path.Combine(world.Work, world.Unique("download"));
        world.VirshOk("vol-download", "--pool", pool, "copy.qcow2", back, "--length", (1 * MiB).ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(File.ReadAllBytes(data), File.ReadAllBytes(back));
    }

    [LibvirtFact]
    public void Vol_resize_grows_by_size_and_delta_and_shrinks_only_when_asked()
    {
        world.Up();
        string pool = world.StartPool();
        world.VirshOk("vol-create-as", pool, "r.raw", "16M", "--format", "raw");

        world.VirshOk("vol-resize", "--pool", pool, "r.raw", "32M");
        Assert.Equal(32 * MiB, Dump(pool, "r.raw").Capacity);
        world.VirshOk("vol-resize", "--pool", pool, "r.raw", "--delta", "16M");
        Assert.Equal(48 * MiB, Dump(pool, "r.raw").Capacity);

        // Shrinking needs --shrink (libvirt's own rule) ...
        CommandResult noFlag = world.Virsh("vol-resize", "--pool", pool, "r.raw", "8M");
        Assert.NotEqual(0, noFlag.ExitCode);
        Assert.Contains("shrink", noFlag.Stderr);
        Assert.Equal(48 * MiB, Dump(pool, "r.raw").Capacity);

        // ... and with it a raw volume is cut.
        world.VirshOk("vol-resize", "--pool", pool, "r.raw", "8M", "--shrink");
        Assert.Equal(8 * MiB, Dump(pool, "r.raw").Capacity);
    }

    [LibvirtFact]
    public void Vol_upload_then_download_round_trips_and_vol_wipe_zeroes()
    {
        world.Up();
        string pool = world.StartPool();
        world.VirshOk("vol-create-as", pool, "u.qcow2", "4M", "--format", "qcow2");
        string data = RandomFile(1 * MiB);
        world.VirshOk("vol-upload", "--pool", pool, "u.qcow2", data);

        string whole = Path.Combine(world.Work, world.Unique("download"));
        world.VirshOk("vol-download", "--pool", pool, "u.qcow2", whole);
        byte[] got = File.ReadAllBytes(whole);
        Assert.Equal(4 * MiB, got.Length);
        Assert.Equal(File.ReadAllBytes(data), got[..(int)MiB]);
        Assert.True(got[(int)MiB..].All(x => x == 0), "the bytes after the upload should read as zeroes");

        // An upload at an offset lands there.
        world.VirshOk("vol-upload", "--pool", pool, "u.qcow2", data, "--offset", (2 * MiB).ToString(System.Globalization.CultureInfo.InvariantCulture));
        string part = Path.Combine(world.Work, world.Unique("download"));
        world.VirshOk("vol-download", "--pool", pool, "u.qcow2", part, "--offset", (2 * MiB).ToString(System.Globalization.CultureInfo.InvariantCulture), "--length", MiB.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(File.ReadAllBytes(data), File.ReadAllBytes(part));

        Assert.Contains("Vol u.qcow2 wiped", world.VirshOk("vol-wipe", "--pool", pool, "u.qcow2"));
        string wiped = Path.Combine(world.Work, world.Unique("download"));
        world.VirshOk("vol-download", "--pool", pool, "u.qcow2", wiped);
        byte[] after = File.ReadAllBytes(wiped);
        Assert.Equal(4 * MiB, after.Length);
        Assert.True(after.All(x => x == 0), "vol-wipe should leave only zeroes");
        // libvirt's own probe after vol-wipe must not replace lvstord's answer.
        Assert.Equal("qcow2", Dump(pool, "u.qcow2").Format);
    }

    [LibvirtFact]
    public void Vol_delete_removes_the_volume_its_socket_and_its_image()
    {
        world.Up();
        string pool = world.StartPool();
        world.VirshOk("vol-create-as", pool, "gone.qcow2", "8M", "--format", "qcow2");
        string path = world.VirshOk("vol-path", "--pool", pool, "gone.qcow2").Trim();
        int filesBefore = Directory.GetFiles(world.PoolDir(pool)).Length;

        Assert.Contains("Vol gone.qcow2 deleted", world.VirshOk("vol-delete", "--pool", pool, "gone.qcow2"));
        Assert.DoesNotContain("gone.qcow2", world.VirshOk("vol-list", pool));
        Assert.NotEqual(0, world.Exec("test", "-e", path).ExitCode);
        Assert.Equal(filesBefore - 1, Directory.GetFiles(world.PoolDir(pool)).Length);
        world.VirshOk("pool-refresh", pool);
        Assert.DoesNotContain("gone.qcow2", world.VirshOk("vol-list", pool));
    }

    private string RandomFile(long size)
    {
        string f = Path.Combine(world.Work, world.Unique("data"));
        byte[] bytes = new byte[size];
        Random.Shared.NextBytes(bytes);
        File.WriteAllBytes(f, bytes);
        return f;
    }
}
