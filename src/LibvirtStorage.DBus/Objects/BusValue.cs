using System.Text;
using Tmds.DBus.Protocol;

namespace LibvirtStorage.DBus;

/// <summary>
/// A property or reply value with its D-Bus signature: a basic value (s, o, b, u, t, x) or an array of
/// structs of strings and int64s (<c>a(ssss)</c>, <c>a(sxss)</c>, <c>a(ss)</c>). Values compare by content,
/// so the object tree can diff two snapshots and signal only what changed.
/// </summary>
internal sealed class BusValue : IEquatable<BusValue>
{
    private readonly object _value;
    private string? _key;

    private BusValue(string signature, object value)
    {
        Signature = signature;
        _value = value;
    }

    public string Signature { get; }

    public static BusValue String(string value) => new("s", value);

    public static BusValue ObjectPath(string value) => new("o", value);

    public static BusValue Bool(bool value) => new("b", value);

    public static BusValue UInt32(uint value) => new("u", value);

    public static BusValue UInt64(ulong value) => new("t", value);

    public static BusValue Int64(long value) => new("x", value);

    /// <summary>An array of structs; every row holds strings and longs matching <paramref name="fields"/> (for example "sxss").</summary>
    public static BusValue Structs(string fields, IEnumerable<object[]> rows) => new($"a({fields})", rows.ToArray());

    public void WriteVariant(ref MessageWriter writer)
    {
        writer.WriteSignature(Signature);
        Write(ref writer);
    }

    public void Write(ref MessageWriter writer)
    {
        switch (_value)
        {
            case string s when Signature == "o":
                writer.WriteObjectPath(s);
                break;
            case string s:
                writer.WriteString(s);
                break;
            case bool b:
                writer.WriteBool(b);
                break;
            case uint u:
                writer.WriteUInt32(u);
                break;
            case ulong t:
                writer.WriteUInt64(t);
                break;
            case long x:
                writer.WriteInt64(x);
                break;
            case object[][] rows:
                ArrayStart array = writer.WriteArrayStart(DBusType.Struct);
                foreach (object[] row in rows)
                {
                    writer.WriteStructureStart();
                    foreach (object field in row)
                    {
                        if (field is long l)
                        {
                            writer.WriteInt64(l);
                        }
                        else
                        {
                            writer.WriteString((string)field);
                        }
                    }
                }

                writer.WriteArrayEnd(array);
                break;
            default:
                throw new InvalidOperationException($"no writer for {_value.GetType()}");
        }
    }

    public bool Equals(BusValue? other) => other is not null && Key == other.Key;

    public override bool Equals(object? obj) => Equals(obj as BusValue);

    public override int GetHashCode() => Key.GetHashCode(StringComparison.Ordinal);

    public override string ToString() => Key;

    private string Key => _key ??= BuildKey();

    private string BuildKey()
    {
        if (_value is not object[][] rows)
        {
            return Signature + ":" + Convert.ToString(_value, System.Globalization.CultureInfo.InvariantCulture);
        }

        var text = new StringBuilder(Signature).Append(':');
        foreach (object[] row in rows)
        {
            text.Append('(');
            foreach (object field in row)
            {
                // Length-prefixed, so no field content can fake a separator.
                string s = Convert.ToString(field, System.Globalization.CultureInfo.InvariantCulture) ?? "";
                text.Append(s.Length).Append(':').Append(s);
            }

            text.Append(')');
        }

        return text.ToString();
    }
}
