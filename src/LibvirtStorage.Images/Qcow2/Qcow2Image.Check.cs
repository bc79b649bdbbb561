using System.Buffers.Binary;

namespace LibvirtStorage.Images.Qcow2;

public sealed partial class Qcow2Image
{
    /// <summary>Most clusters check will count (a 4 TiB file at 64 KiB clusters); larger files are refused.</summary>
    private const long MaxCheckedClusters = 1L << 26;

    /// <summary>
    /// Recounts every reference (header, L1, L2 tables, data and compressed clusters, refcount table and
    /// blocks, snapshots and bitmaps) and compares with the stored refcounts, like QEMU's
    /// qcow2_check_refcounts. Repairs leaks (and, with <see cref="CheckRepair.All"/>, refcounts that are
    /// too low and wrong COPIED flags).
    /// </summary>
    public ImageCheckResult Check(CheckRepair repair) => Check(repair, out _);

    /// <summary>Check, also counting the errors that are not refcount mismatches (bad offsets, bad bitmaps, overlaps).</summary>
    internal ImageCheckResult Check(CheckRepair repair, out int structuralErrors)
    {
        if (repair != CheckRepair.None)
        {
            CheckWritable();
        }

        lock (_meta)
        {
            if (!_readOnly)
            {
                FlushLocked();
            }

            var counter = new ReferenceCounter(this);
            counter.CountAll();
            structuralErrors = counter.StructuralErrors;
            ImageCheckResult result = counter.Compare(repair);
            if (result.LeaksFixed + result.CorruptionsFixed > 0)
            {
                FlushLocked();
            }

            return result;
        }
    }

    /// <summary>The recount behind <see cref="Check(CheckRepair)"/>. Runs under the image's metadata lock.</summary>
    private sealed class ReferenceCounter
    {
        private readonly Qcow2Image _image;
        private readonly Qcow2Layout _layout;
        private readonly uint[] _refs;
        private readonly List<string> _messages = [];
        private readonly List<(long L1Index, long Guest)> _activeCopied = [];
        private int _corruptions;
        private long _allocated, _fragmented, _compressed;

        public ReferenceCounter(Qcow2Image image)
        {
            _image = image;
            _layout = image._layout;
            long clusters = Math.Max(_layout.ClustersFor(image._file.Length), image._refcounts.HighWater);
            if (clusters > MaxCheckedClusters)
            {
                throw new ImageException(ErrorKind.InvalidArgument, $"the file has {clusters} clusters, more than check handles ({MaxCheckedClusters})", image.Path);
            }

            _refs = new uint[clusters];
        }

        /// <summary>Errors found while walking the metadata (before refcounts are compared).</summary>
        public int StructuralErrors { get; private set; }

        public void CountAll()
        {
            Qcow2Header h = _image._header;
            Add(0, _layout.ClusterSize, "header");
            Add((long)h.L1TableOffset, (long)h.L1Size * 8, "L1 table");
            Add(_image._refcounts.TableOffset, (long)_image._refcounts.TableClusters * _layout.ClusterSize, "refcount table");
            ReadOnlySpan<ulong> refTable = _image._refcounts.Table;
            for (int i = 0; i < refTable.Length; i++)
            {
                ulong block = refTable[i] & Qcow2Layout.RefTableOffsetMask;
                if (block != 0)
                {
                    AddCluster(block, $"refcount block {i}");
                }
            }

            WalkL1(_image._l1, active: true);
            CountSnapshots(h);
            CountBitmaps(h);
            StructuralErrors = _corruptions;
        }

        public ImageCheckResult Compare(CheckRepair repair)
        {
            int leaks = 0, leaksFixed = 0, corruptionsFixed = 0;
            long end = 0;
            Qcow2Refcounts refcounts = _image._refcounts;
            for (long c = 0; c < _refs.Length; c++)
            {
                ulong stored = refcounts.Get(c);
                ulong counted = _refs[c];
                if (counted > 0)
                {
                    end = c + 1;
                }

                if (stored == counted)
                {
                    continue;
                }

                bool leak = stored > counted;
                bool fix = repair == CheckRepair.All || (leak && repair == CheckRepair.Leaks);
                _messages.Add($"{(fix ? "Repairing" : leak ? "Leaked" : "ERROR")} cluster {c} refcount={stored} reference={counted}");
                if (leak)
                {
                    leaks++;
                }
                else
                {
                    _corruptions++;
                }

                if (fix)
                {
                    refcounts.Set(c, counted);
                    if (leak)
                    {
                        leaksFixed++;
                    }
                    else
                    {
                        corruptionsFixed++;
                    }
                }
            }

            corruptionsFixed += CheckCopiedFlags(repair == CheckRepair.All);
            return new ImageCheckResult
            {
                Corruptions = _corruptions - corruptionsFixed,
                Leaks = leaks - leaksFixed,
                CorruptionsFixed = corruptionsFixed,
                LeaksFixed = leaksFixed,
                TotalClusters = _layout.ClustersFor(_image._size),
                AllocatedClusters = _allocated,
                FragmentedClusters = _fragmented,
                CompressedClusters = _compressed,
                ImageEndOffset = end << _layout.ClusterBits,
                Messages = _messages,
            };
        }

        private void WalkL1(ulong[] l1, bool active)
        {
            long previousHost = -1;
            for (long i = 0; i < l1.Length; i++)
            {
                ulong l2 = l1[i] & Qcow2Layout.OffsetMask;
                if (l2 == 0)
                {
                    continue;
                }

                if (!AddCluster(l2, $"L2 table (L1 index {i})") || l2 < (ulong)_layout.ClusterSize)
                {
                    continue;
                }

                if (active)
                {
                    _activeCopied.Add((i, -1));
                }

                byte[] table = (byte[])_image._l2Cache.Get((long)l2).Clone();
                for (int j = 0; j < _layout.L2Entries; j++)
                {
                    long guest = (i << (_layout.ClusterBits + _layout.L2Bits)) + ((long)j << _layout.ClusterBits);
                    ulong entry = Qcow2TableCache.ReadEntry(table, _layout.ExtendedL2 ? j * 2 : j);
                    if ((entry & Qcow2Layout.FlagCompressed) != 0)
                    {
                        (long host, int size) = _layout.CompressedExtent(entry);
                        Add(host & ~511L, ((host + size + 511) & ~511L) - (host & ~511L), $"compressed cluster for guest offset {guest}");
                        _allocated++;
                        _compressed++;
                        continue;
                    }

                    ulong data = entry & Qcow2Layout.OffsetMask;
                    if (_layout.ExtendedL2)
                    {
                        ulong bitmap = Qcow2TableCache.ReadEntry(table, (j * 2) + 1);
                        if ((bitmap & (bitmap >> 32) & Qcow2Layout.AllAllocBits) != 0 || (data == 0 && (bitmap & Qcow2Layout.AllAllocBits) != 0))
                        {
                            Corruption($"invalid subcluster bitmap 0x{bitmap:x16} for guest offset {guest}");
                        }
                    }

                    if (data == 0)
                    {
                        continue;
                    }

                    if (AddCluster(data, $"data cluster for guest offset {guest}") && active)
                    {
                        _activeCopied.Add((i, guest));
                    }

                    _allocated++;
                    if (previousHost >= 0 && (long)data != previousHost + _layout.ClusterSize)
                    {
                        _fragmented++;
                    }

                    previousHost = (long)data;
                }
            }
        }

        /// <summary>COPIED must be set exactly on clusters whose refcount is 1 (qcow2.txt, L1/L2 entry bit 63).</summary>
        private int CheckCopiedFlags(bool fix)
        {
            int fixedCount = 0;
            foreach ((long l1Index, long guest) in _activeCopied)
            {
                ulong l1Entry = _image._l1[l1Index];
                if (guest < 0)
                {
                    ulong l2 = l1Entry & Qcow2Layout.OffsetMask;
                    bool copied = (l1Entry & Qcow2Layout.FlagCopied) != 0;
                    bool single = _image._refcounts.Get((long)(l2 >> _layout.ClusterBits)) == 1;
                    if (copied != single)
                    {
                        Corruption($"OFLAG_COPIED L2 cluster: l1_index={l1Index} l1_entry=0x{l1Entry:x} refcount is {(single ? "1" : "not 1")}");
                        if (fix)
                        {
                            _image._l1[l1Index] = single ? l1Entry | Qcow2Layout.FlagCopied : l1Entry & ~Qcow2Layout.FlagCopied;
                            _image._l1Dirty = true;
                            fixedCount++;
                        }
                    }

                    continue;
                }

                byte[] table = _image._l2Cache.Get((long)(l1Entry & Qcow2Layout.OffsetMask));
                int slot = _layout.ExtendedL2 ? _layout.L2Index(guest) * 2 : _layout.L2Index(guest);
                ulong entry = Qcow2TableCache.ReadEntry(table, slot);
                bool dataCopied = (entry & Qcow2Layout.FlagCopied) != 0;
                bool dataSingle = _image._refcounts.Get((long)((entry & Qcow2Layout.OffsetMask) >> _layout.ClusterBits)) == 1;
                if (dataCopied != dataSingle)
                {
                    Corruption($"OFLAG_COPIED data cluster: guest offset {guest} l2_entry=0x{entry:x} refcount is {(dataSingle ? "1" : "not 1")}");
                    if (fix)
                    {
                        Qcow2TableCache.WriteEntry(table, slot, dataSingle ? entry | Qcow2Layout.FlagCopied : entry & ~Qcow2Layout.FlagCopied);
                        _image._l2Cache.MarkDirty((long)(l1Entry & Qcow2Layout.OffsetMask));
                        fixedCount++;
                    }
                }
            }

            return fixedCount;
        }

        private void CountSnapshots(Qcow2Header h)
        {
            long offset = (long)h.SnapshotsOffset;
            long start = offset;
            var fixedPart = new byte[40];
            for (uint s = 0; s < h.NbSnapshots; s++)
            {
                if (offset + 40 > _image._file.Length)
                {
                    Corruption($"snapshot table entry {s} lies past the end of the file");
                    return;
                }

                _image._file.Read(fixedPart, offset);
                ulong l1Offset = BinaryPrimitives.ReadUInt64BigEndian(fixedPart);
                uint l1Size = BinaryPrimitives.ReadUInt32BigEndian(fixedPart.AsSpan(8));
                int idSize = BinaryPrimitives.ReadUInt16BigEndian(fixedPart.AsSpan(12));
                int nameSize = BinaryPrimitives.ReadUInt16BigEndian(fixedPart.AsSpan(14));
                uint extraSize = BinaryPrimitives.ReadUInt32BigEndian(fixedPart.AsSpan(36));
                offset += (40 + extraSize + idSize + nameSize + 7) & ~7L;
                if ((long)l1Size * 8 > Qcow2Header.MaxL1Bytes || l1Offset + ((ulong)l1Size * 8) > (ulong)_image._file.Length || !_layout.IsClusterAligned(l1Offset))
                {
                    Corruption($"snapshot {s} has an invalid L1 table (offset 0x{l1Offset:x}, {l1Size} entries)");
                    continue;
                }

                Add((long)l1Offset, (long)l1Size * 8, $"L1 table of snapshot {s}");
                WalkL1(ReadTable(_image._file, (long)l1Offset, (int)l1Size), active: false);
            }

            if (h.NbSnapshots > 0)
            {
                Add(start, offset - start, "snapshot table");
            }
        }

        private void CountBitmaps(Qcow2Header h)
        {
            if ((h.AutoclearFeatures & Qcow2Header.AutoclearBitmaps) == 0)
            {
                return;
            }

            foreach (Qcow2HeaderExtension e in h.Extensions)
            {
                if (e.Type != Qcow2Header.ExtBitmaps || e.Data.Length < 24)
                {
                    continue;
                }

                uint count = BinaryPrimitives.ReadUInt32BigEndian(e.Data);
                long dirSize = (long)BinaryPrimitives.ReadUInt64BigEndian(e.Data.AsSpan(8));
                long dirOffset = (long)BinaryPrimitives.ReadUInt64BigEndian(e.Data.AsSpan(16));
                if (dirSize is <= 0 or > 64 << 20 || dirOffset <= 0 || dirOffset + dirSize > _image._file.Length)
                {
                    Corruption("bitmap directory lies outside the file");
                    return;
                }

                Add(dirOffset, dirSize, "bitmap directory");
                var dir = new byte[dirSize];
                _image._file.Read(dir, dirOffset);
                int pos = 0;
                for (uint b = 0; b < count && pos + 24 <= dir.Length; b++)
                {
                    ulong tableOffset = BinaryPrimitives.ReadUInt64BigEndian(dir.AsSpan(pos));
                    uint tableSize = BinaryPrimitives.ReadUInt32BigEndian(dir.AsSpan(pos + 8));
                    int nameSize = BinaryPrimitives.ReadUInt16BigEndian(dir.AsSpan(pos + 18));
                    uint extra = BinaryPrimitives.ReadUInt32BigEndian(dir.AsSpan(pos + 20));
                    pos += (int)((24 + extra + (uint)nameSize + 7) & ~7u);
                    if (tableOffset == 0 || tableSize == 0 || tableSize > (8 << 20) || tableOffset + ((ulong)tableSize * 8) > (ulong)_image._file.Length)
                    {
                        continue;
                    }

                    Add((long)tableOffset, (long)tableSize * 8, $"bitmap table {b}");
                    foreach (ulong entry in ReadTable(_image._file, (long)tableOffset, (int)tableSize))
                    {
                        ulong data = entry & Qcow2Layout.OffsetMask;
                        if (data != 0)
                        {
                            AddCluster(data, $"bitmap {b} data");
                        }
                    }
                }
            }
        }

        private bool AddCluster(ulong offset, string what)
        {
            if (!_layout.IsClusterAligned(offset))
            {
                Corruption($"{what} at 0x{offset:x} is not cluster aligned");
                return false;
            }

            return Add((long)Math.Min(offset, long.MaxValue), _layout.ClusterSize, what);
        }

        private bool Add(long offset, long length, string what)
        {
            if (length <= 0)
            {
                return true;
            }

            long first = offset >> _layout.ClusterBits;
            long last = (offset + length - 1) >> _layout.ClusterBits;
            if (offset < 0 || last >= _refs.Length)
            {
                Corruption($"{what} at 0x{offset:x} lies past the end of the file");
                return false;
            }

            for (long c = first; c <= last; c++)
            {
                _refs[c] = _refs[c] == uint.MaxValue ? uint.MaxValue : _refs[c] + 1;
            }

            return true;
        }

        private void Corruption(string message)
        {
            _corruptions++;
            _messages.Add("ERROR " + message);
        }
    }
}
