using System.Text;
using LibvirtStorage.Images;
using LibvirtStorage.Service;
using LibvirtStorage.Vhost;
using LibvirtStorage.Vhost.Blk;
using LibvirtStorage.Vhost.Tests.Backend;
using LibvirtStorage.Vhost.Tests.Server;
using Xunit;

namespace LibvirtStorage.VhostBlk.Tests;

/// <summary>A real qcow2 image exported through <see cref="ImageBlockDevice"/> and the server, checked with QEMU's tools.</summary>
public sealed class ImageExportTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vhost-blk-image-").FullName;
    private readonly ListLogger _log = new();

    private string ImagePath => Path.Combine(_dir, "disk.qcow2");

    private string SocketPath => Path.Combine(_dir, "blk.sock");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task Writes_land_in_the_qcow2_image_and_qemu_reads_them_back()
    {
        Tools.CreateQcow2(ImagePath, "16M");
        byte[] data = new byte[16384];
        Array.Fill(data, (byte)0x5a);
        using (IBlockImage image = ImageOpener.Open(ImagePath))
        {
            var device = new ImageBlockDevice(image, serial: null);
            await using (var server = VhostUserBlkServer.Listen(SocketPath, device, new VhostUserBlkOptions { NumQueues = 2 }, _log))
            {
                server.Start();
                using BlkGuest guest = BlkGuest.Connect(SocketPath).Start();
                Assert.Equal((byte)VirtioBlkStatus.Ok, guest.Request(VirtioBlkRequestType.Out, 2048, data).Status);
                var read = guest.Request(VirtioBlkRequestType.In, 2048, inputLength: data.Length);
                Assert.Equal(((byte)VirtioBlkStatus.Ok, (uint)data.Length + 1), (read.Status, read.Used));
                Assert.Equal(data, read.Input);
                Assert.Equal((byte)VirtioBlkStatus.Ok, guest.Request(VirtioBlkRequestType.Flush, 0).Status);
                var id = guest.Request(VirtioBlkRequestType.GetId, 0, inputLength: 20);
                Assert.Equal("disk.qcow2", Encoding.ASCII.GetString(id.Input).TrimEnd('\0'));
                Assert.Equal((16UL << 20) / 512, BitConverter.ToUInt64(guest.GetConfig(), 0));

                // Past the end of the 16 MiB disk: IOERR, nothing written.
                Assert.Equal((byte)VirtioBlkStatus.IoError, guest.Request(VirtioBlkRequestType.Out, 32768, new byte[512]).Status);
            }
        }

        Assert.Equal(0, Tools.Run("qemu-img", "check", "-q", ImagePath).Exit);
        Assert.True(Tools.QemuIoPatternMatches(ImagePath, 0x5a, 2048L * 512, data.Length));
        Assert.True(Tools.QemuIoPatternMatches(ImagePath, 0x00, 0, 1 << 20));
    }

    [Fact]
    public async Task A_read_only_export_refuses_writes_with_ioerr_and_leaves_the_image_alone()
    {
        Tools.CreateQcow2(ImagePath, "4M");
        Assert.Equal(0, Tools.Run("qemu-io", "-f", "qcow2", "-c", "write -P 0x33 0 4096", ImagePath).Exit);
        using (IBlockImage image = ImageOpener.Open(ImagePath, new ImageOpenOptions { ReadOnly = true }))
        {
            var device = new ImageBlockDevice(image, serial: "ro-disk");
            await using var server = VhostUserBlkServer.Listen(SocketPath, device, new VhostUserBlkOptions(), _log);
            server.Start();
            using BlkGuest guest = BlkGuest.Connect(SocketPath).Start();
            Assert.NotEqual(0UL, guest.Features & VirtioBlkFeatures.ReadOnly);
            Assert.Equal((byte)VirtioBlkStatus.IoError, guest.Request(VirtioBlkRequestType.Out, 0, new byte[4096]).Status);
            var read = guest.Request(VirtioBlkRequestType.In, 0, inputLength: 4096);
            Assert.All(read.Input, b => Assert.Equal(0x33, b));
        }

        Assert.True(Tools.QemuIoPatternMatches(ImagePath, 0x33, 0, 4096));
    }

    [Fact]
    public void The_serial_is_the_option_or_the_file_name_cut_to_20_bytes()
    {
        string longName = Path.Combine(_dir, "a-rather-long-image-file-name.qcow2");
        Tools.CreateQcow2(longName, "1M");
        using IBlockImage image = ImageOpener.Open(longName);
        Assert.Equal("a-rather-long-image-", new ImageBlockDevice(image, null).Serial);
        Assert.Equal("given", new ImageBlockDevice(image, "given").Serial);
        Assert.Equal(1 << 20, new ImageBlockDevice(image, null).Capacity);
        Assert.Equal(512, new ImageBlockDevice(image, null).LogicalBlockSize);
    }
}
