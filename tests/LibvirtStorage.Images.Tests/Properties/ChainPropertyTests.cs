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
    [Property(MaxTest = 80, Arbitrary = [typeof(ChainArbitraries)], QuietOnSuccess = true)]
    public void ChainsAgreeWithTheModel(ChainScenario scenario) => RunGuarded(scenario);

    [Property(MaxTest = 50, Arbitrary = [typeof(SingleImageArbitraries)], QuietOnSuccess = true)]
    public void LongSequencesOnOneImageAgreeWithTheModel(ChainScenario scenario) => RunGuarded(scenario);

    /// <summary>Runs a scenario with a generous time limit, so an engine that loops fails the case instead of the run.</summary>
    private static void RunGuarded(ChainScenario scenario)
    {
        var log = new List<string>();
        var current = new List<DiskOp>();
        Outcome o = Guard.Run(() => Run(scenario, log, current), TimeSpan.FromSeconds(120));
        if (o.Kind == OutcomeKind.Hang)
        {
            List<DiskOp> ops;
            lock (current)
            {
                ops = [.. current];
            }

            throw new XunitException($"the scenario did not finish (hang); done:\n{string.Join("\n", log)}\nlayer in progress, last op possibly unfinished:\n  {string.Join("\n  ", ops)}");
        }

        if (o.Error is not null)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(o.Error).Throw();
        }
    }

    private static void Run(ChainScenario scenario, List<string> log, List<DiskOp> current)
    {
        using var dir = new TempDir();
        var model = new DiskModel(scenario.Size);
        string? below = null;
        ImageFormat belowFormat = ImageFormat.Raw;
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
                    lock (current)
                    {
                        current.Clear();
                    }

                    foreach (OpSeed op in layer.Ops)
                    {
                        DiskOp placed = layer.Materialize(op, model.Size);
                        lock (current)
                        {
                            current.Add(placed);
                        }

                        session.Apply(placed);
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
