using System.Text.Json.Serialization;

namespace LibvirtStorage.Service.State;

/// <summary>Source-generated JSON for the inventory file: indented, camelCase, enums as names, readable by people.</summary>
[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    UseStringEnumConverter = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(InventoryState))]
internal sealed partial class StateJsonContext : JsonSerializerContext;
