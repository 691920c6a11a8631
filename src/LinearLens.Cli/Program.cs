using System.Runtime.InteropServices;
using LinearLens;
using LinearLens.Cli;

// Ctrl-C (SIGINT) and SIGTERM: one line, the temporary files of unfinished outputs deleted, exit 130 / 143 at once —
// the computation has no checkpoints worth waiting for, and every finished output file is already complete.
void Interrupt(PosixSignalContext context, int code)
{
    context.Cancel = true;
    AtomicFile.DeletePending();
    Console.Error.WriteLine($"error: interrupted ({(code == 130 ? "Ctrl-C" : "SIGTERM")}); unfinished output files were removed");
    Environment.Exit(code);
}
using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => Interrupt(c, 130));
using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => Interrupt(c, 143));

return Cli.Run(args, Console.Out, Console.Error);
