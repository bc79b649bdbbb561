namespace LibvirtStorage.Bench;

/// <summary>Chooses our side of the operation rows.</summary>
internal static class EngineOperations
{
    /// <summary>The engine's operations once LibvirtStorage.Images.Operations is on main; until then a stand-in that reports n/a.</summary>
    public static IEngineOperations Create() => new OperationsNotOnMain();
}
