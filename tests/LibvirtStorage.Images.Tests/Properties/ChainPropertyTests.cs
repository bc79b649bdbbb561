using FsCheck.Xunit;
using LibvirtStorage.Images.Tests.Infrastructure;
using Xunit.Sdk;

namespace LibvirtStorage.Images.Tests.Properties;

/// <summary>
/// Random sequences of write / write-zeroes (with and without unmap) / discard / resize / flush /
/// reopen over chains of depth 1 to 3 with random geometry, checked against the <see cref="DiskModel"/>
/// through our engine and through QEMU (convert, qemu-io read -P, qemu-img compare), with every qcow2
/// layer passing qemu-img check with no errors and no leaks.
/// </summary>
/// <remarks>The case counts keep the suite near a minute on 2 cores; FsCheck prints a Replay seed on failure.</remarks>
public sealed class ChainPropertyTests
{
    [Property(MaxTest = 60, Arbitrary = [typeof(ChainArbitraries)], QuietOnSuccess = true)]
    public void ChainsAgreeWithTheModel(ChainScenario scenario) => Run(scenario);

    [Property(MaxTest = 40, Arbitrary = [typeof(SingleImageArbitraries)], QuietOnSuccess = true)]
    public void LongSequencesOnOneImageAgreeWithTheModel(ChainScenario scenario) => Run(scenario);

    private static void Run(ChainScenario scenario)
    {
        using var dir = new TempDir();
        var model = new DiskModel(scenario.Size);
        string? below = null;
        ImageFormat belowFormat = ImageFormat.Raw;
        var log = new List<string>();
        for (int i = 0; i < scenario.Layers.Length; i++)
        {
            LayerSpec layer = scenario.Layers[i];
            string name = $"layer{i}.{layer.Format.ToName()}";
            string path = dir.File(name);
            ImageOpener.Create(path, layer.Variant.ToCreateOptions(below is null ? scenario.Size : null, below, below is null ? null : belowFormat));
            using (var session = new EngineSession(path, model))
            {
                try
                {
                    foreach (OpSeed op in layer.Ops)
                    {
                        session.Apply(layer.Materialize(op, model.Size));
                    }
                }
                finally
                {
                    log.Add($"{name} ({layer.Variant.Name}):\n  {session.Describe()}");
                }
            }

            if (layer.Format == ImageFormat.Qcow2)
            {
                Expect(() => ImageAssert.QemuCheckClean(path), log);
            }

            below = name;
            belowFormat = layer.Format;
        }

        string top = dir.File(below!);
        Expect(() => ImageAssert.EngineMatchesModel(top, model), log);
        Expect(() => ImageAssert.QemuMatchesModel(top, belowFormat.ToName(), model, dir.Path), log);
    }

    /// <summary>Runs an assertion; on failure the message carries the whole operation history as a repro.</summary>
    private static void Expect(Action check, List<string> log)
    {
        try
        {
            check();
        }
        catch (Exception e) when (e is XunitException or QemuToolException)
        {
            throw new XunitException($"{e.Message}\noperations:\n{string.Join("\n", log)}");
        }
    }
}
