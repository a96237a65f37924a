"""What the tests stand on: the emulator of the TIR endpoint and its recorded replies."""
