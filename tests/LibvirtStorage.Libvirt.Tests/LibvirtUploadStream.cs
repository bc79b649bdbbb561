using System.Runtime.InteropServices;

namespace LibvirtStorage.Libvirt.Tests;

/// <summary>
/// A sparse vol-upload stream driven through libvirt's public C API (libvirt.so.0), for what virsh cannot do: send
/// data and holes, then abort instead of finishing. Connects to the namespace's libvirtd through
/// <c>/proc/PID/root</c> of the namespace holder, so the test process itself stays on the host.
/// </summary>
internal sealed class LibvirtUploadStream : IDisposable
{
    private const uint SparseStream = 1; // VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM

    private readonly IntPtr _conn;
    private readonly IntPtr _pool;
    private readonly IntPtr _vol;
    private readonly IntPtr _stream;

    public LibvirtUploadStream(int namespacePid, string pool, string volume, ulong offset, ulong length)
    {
        _conn = Check(virConnectOpen($"qemu:///system?socket=/proc/{namespacePid}/root/run/libvirt/libvirt-sock"), "virConnectOpen");
        _pool = Check(virStoragePoolLookupByName(_conn, pool), "virStoragePoolLookupByName");
        _vol = Check(virStorageVolLookupByName(_pool, volume), "virStorageVolLookupByName");
        _stream = Check(virStreamNew(_conn, 0), "virStreamNew");
        Check(virStorageVolUpload(_vol, _stream, offset, length, SparseStream), "virStorageVolUpload");
    }

    public void Send(byte[] data)
    {
        for (int done = 0; done < data.Length;)
        {
            done += Check(virStreamSend(_stream, ref data[done], (nuint)(data.Length - done)), "virStreamSend");
        }
    }

    public void SendHole(long length) => Check(virStreamSendHole(_stream, length, 0), "virStreamSendHole");

    public void Abort() => Check(virStreamAbort(_stream), "virStreamAbort");

    /// <summary>Finishes the stream; returns libvirt's error message, or null when it succeeded.</summary>
    public string? Finish() => virStreamFinish(_stream) < 0 ? LastError() : null;

    public void Dispose()
    {
        virStreamFree(_stream);
        virStorageVolFree(_vol);
        virStoragePoolFree(_pool);
        virConnectClose(_conn);
    }

    private static IntPtr Check(IntPtr result, string call) =>
        result != IntPtr.Zero ? result : throw new InvalidOperationException($"{call}: {LastError()}");

    private static int Check(int result, string call) =>
        result >= 0 ? result : throw new InvalidOperationException($"{call}: {LastError()}");

    private static string LastError() => Marshal.PtrToStringUTF8(virGetLastErrorMessage()) ?? "no libvirt error";

    private const string Lib = "libvirt.so.0";

    [DllImport(Lib)] private static extern IntPtr virConnectOpen([MarshalAs(UnmanagedType.LPUTF8Str)] string uri);
    [DllImport(Lib)] private static extern int virConnectClose(IntPtr conn);
    [DllImport(Lib)] private static extern IntPtr virStoragePoolLookupByName(IntPtr conn, [MarshalAs(UnmanagedType.LPUTF8Str)] string name);
    [DllImport(Lib)] private static extern int virStoragePoolFree(IntPtr pool);
    [DllImport(Lib)] private static extern IntPtr virStorageVolLookupByName(IntPtr pool, [MarshalAs(UnmanagedType.LPUTF8Str)] string name);
    [DllImport(Lib)] private static extern int virStorageVolFree(IntPtr vol);
    [DllImport(Lib)] private static extern IntPtr virStreamNew(IntPtr conn, uint flags);
    [DllImport(Lib)] private static extern int virStorageVolUpload(IntPtr vol, IntPtr stream, ulong offset, ulong length, uint flags);
    [DllImport(Lib)] private static extern int virStreamSend(IntPtr stream, ref byte data, nuint nbytes);
    [DllImport(Lib)] private static extern int virStreamSendHole(IntPtr stream, long length, uint flags);
    [DllImport(Lib)] private static extern int virStreamAbort(IntPtr stream);
    [DllImport(Lib)] private static extern int virStreamFinish(IntPtr stream);
    [DllImport(Lib)] private static extern int virStreamFree(IntPtr stream);
    [DllImport(Lib)] private static extern IntPtr virGetLastErrorMessage();
}
