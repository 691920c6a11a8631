namespace LinearLens;

/// <summary>
/// A problem with the user's input (a model folder, a file, an option). The message is one line that says what
/// is wrong, where, and how to fix it; the CLI prints it and exits with code 2.
/// </summary>
public sealed class LinearLensException(string message) : Exception(message);
