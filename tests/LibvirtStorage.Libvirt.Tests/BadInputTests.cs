using System.Globalization;
using Xunit;

namespace LibvirtStorage.Libvirt.Tests;

/// <summary>
/// Bad input gives virsh's usual error shape (<c>error: …</c> lines, exit 1) with the reason (libvirt's own or
/// lvstord's), and changes nothing.
/// </summary>
[Collection(LibvirtCollection.Name)]
public sealed class BadInputTests(LibvirtWorld world)
{
    private const long MiB = 1024 * 1024;

    private CommandResult Fails(params string[] args)
    {
        CommandResult r = world.Virsh(args);
        Assert.True(r.ExitCode != 0, $"expected a failure:\n{r}");
        Assert.StartsWith("error: ", r.Stderr.TrimStart());
        return r;
    }

    private string Volumes(string pool) => world.VolumeNames(pool);

    [LibvirtFact]
    public void A_volume_in_a_missing_pool_is_refused()
    {
        world.Up();
        CommandResult r = Fails("vol-create-as", "no-such-pool", "v.raw", "1M");
        Assert.Contains("no-such-pool", r.Stderr);
    }

    [LibvirtFact]
    public void A_duplicate_volume_is_refused_and_the_first_stays()
    {
        world.Up();
        string pool = world.StartPool();
        world.VirshOk("vol-create-as", pool, "dup.qcow2", "8M", "--format", "qcow2");
        CommandResult r = Fails("vol-create-as", pool, "dup.qcow2", "16M", "--format", "qcow2");
        Assert.Contains("dup.qcow2", r.Stderr);
        Assert.Contains("already", r.Stderr);
        Assert.Equal(8 * MiB, VolumeXml.Parse(world.VirshOk("vol-dumpxml", "--pool", pool, "dup.qcow2")).Capacity);
    }

    [LibvirtFact]
    public void A_name_taken_by_a_stray_file_in_the_pool_directory_is_refused_by_lvstord_and_the_file_is_kept()
    {
        world.Up();
        string pool = world.StartPool();
        string stray = Path.Combine(world.PoolDir(pool), "stray.qcow2");
        File.WriteAllText(stray, "not an image: lvstord must not touch it");
        CommandResult r = Fails("vol-create-as", pool, "stray.qcow2", "8M", "--format", "qcow2");
        Assert.Contains("a file named 'stray.qcow2' already exists", r.Stderr);
        Assert.Equal("not an image: lvstord must not touch it", File.ReadAllText(stray));
        Assert.DoesNotContain("stray.qcow2", Volumes(pool));
    }

    [LibvirtFact]
    public void Bad_xml_and_bad_formats_and_unknown_backing_volumes_are_refused()
    {
        world.Up();
        string pool = world.StartPool();
        string dir = Directory.CreateDirectory(Path.Combine(world.Work, "xml", pool)).FullName;

        string broken = Path.Combine(dir, "broken.xml");
        File.WriteAllText(broken, "<volume><name>x.qcow2</name><capacity>1");
        Fails("vol-create", pool, broken);

        // libvirt accepts vmdk for vstorage; lvstord knows raw and qcow2 only and says so.
        string vmdk = Path.Combine(dir, "vmdk.xml");
        File.WriteAllText(vmdk, "<volume><name>x.vmdk</name><capacity unit='M'>8</capacity><target><format type='vmdk'/></target></volume>");
        CommandResult f = Fails("vol-create", pool, vmdk);
        Assert.Contains("volume format 'vmdk' is not supported", f.Stderr);

        // A backing store that is not a volume of this pool (a host file path) is refused, not opened.
        string outside = Path.Combine(dir, "outside.img");
        File.WriteAllBytes(outside, new byte[4096]);
        string back = Path.Combine(dir, "back.xml");
        File.WriteAllText(back, $"<volume><name>o.qcow2</name><capacity unit='M'>8</capacity><target><format type='qcow2'/></target><backingStore><path>{outside}</path><format type='raw'/></backingStore></volume>");
        CommandResult b = Fails("vol-create", pool, back);
        Assert.Contains($"no volume has the path '{outside}'", b.Stderr);

        Assert.Equal("", Volumes(pool).Trim());
    }

    [LibvirtFact]
    public void Bad_sizes_are_refused()
    {
        world.Up();
        string pool = world.StartPool();
        Fails("vol-create-as", pool, "s1.raw", "abc");
        Fails("vol-create-as", pool, "s2.raw", "-1M");
        Fails("vol-create-as", pool, "s3.raw", "100E");
        // Zero is a size virsh accepts; lvstord wants one unless there is a backing volume.
        Assert.Contains("needs a capacity", Fails("vol-create-as", pool, "s4.raw", "0").Stderr);
        world.VirshOk("vol-create-as", pool, "ok.raw", "8M", "--format", "raw");
        Fails("vol-resize", "--pool", pool, "ok.raw", "xyz");
        Assert.Equal("ok.raw", Volumes(pool).Trim());
        Assert.Equal(8 * MiB, VolumeXml.Parse(world.VirshOk("vol-dumpxml", "--pool", pool, "ok.raw")).Capacity);
    }

    [LibvirtFact]
    public void Shrinking_below_the_allocation_or_over_data_in_a_qcow2_tail_is_refused()
    {
        world.Up();
        string pool = world.StartPool();
        string data = Path.Combine(world.Work, world.Unique("data"));
        byte[] bytes = new byte[4 * MiB];
        Random.Shared.NextBytes(bytes);
        File.WriteAllBytes(data, bytes);

        // raw: 4 MiB written, so the allocation is at least that; libvirt refuses a shrink below it.
        world.VirshOk("vol-create-as", pool, "r.raw", "16M", "--format", "raw");
        world.VirshOk("vol-upload", "--pool", pool, "r.raw", data);
        CommandResult r = Fails("vol-resize", "--pool", pool, "r.raw", "1M", "--shrink");
        Assert.Contains("allocation", r.Stderr);
        Assert.Equal(16 * MiB, VolumeXml.Parse(world.VirshOk("vol-dumpxml", "--pool", pool, "r.raw")).Capacity);

        // qcow2: data at 12 MiB; a shrink to 8 MiB would discard it, which lvstord refuses.
        world.VirshOk("vol-create-as", pool, "q.qcow2", "16M", "--format", "qcow2");
        world.VirshOk("vol-upload", "--pool", pool, "q.qcow2", data, "--offset", (12 * MiB).ToString(CultureInfo.InvariantCulture));
        CommandResult q = Fails("vol-resize", "--pool", pool, "q.qcow2", "8M", "--shrink");
        Assert.Contains("cannot resize volume 'q.qcow2'", q.Stderr);
        Assert.Contains("data is allocated", q.Stderr);
        Assert.Equal(16 * MiB, VolumeXml.Parse(world.VirshOk("vol-dumpxml", "--pool", pool, "q.qcow2")).Capacity);
    }

    [LibvirtFact]
    public void Names_with_odd_characters_are_refused_with_the_reason_and_unicode_names_work()
    {
        world.Up();
        string pool = world.StartPool();
        foreach (string name in new[] { "has space.raw", ".hidden.raw", "-dash.raw", "colon:x.raw", "slash/x.raw", "tab\tx.raw" })
        {
            // Named options, so that virsh takes "-dash.raw" as the name and not as an option.
            CommandResult r = Fails("vol-create-as", "--pool", pool, "--name", name, "--capacity", "1M", "--format", "raw");
            Assert.Contains("volume name", r.Stderr);
        }

        Assert.Equal("", Volumes(pool).Trim());
        Assert.Empty(Directory.GetFiles(world.PoolDir(pool)));

        world.VirshOk("vol-create-as", pool, "dïsk-ü_1+2.raw", "1M", "--format", "raw");
        Assert.Equal($"{LibvirtWorld.RuntimeDir}/{pool}/dïsk-ü_1+2.raw.sock", world.VirshOk("vol-path", "--pool", pool, "dïsk-ü_1+2.raw").Trim());
    }

    [LibvirtFact]
    public void A_pool_on_a_directory_lvstord_refuses_does_not_start_and_says_why()
    {
        world.Up();
        string pool = world.Unique("badpool");
        // lvstord's state directory may not hold a pool.
        world.VirshOk("pool-define-as", pool, "vstorage", "--target", Path.Combine(world.Work, "lvstord-state", "inside"));
        CommandResult r = Fails("pool-start", pool);
        Assert.Contains(pool, r.Stderr);
        Assert.Matches(@"State:\s+inactive", world.VirshOk("pool-info", pool));
        world.VirshOk("pool-undefine", pool);
    }
}
