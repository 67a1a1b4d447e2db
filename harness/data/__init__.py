"""Data sets on disk: what each task declares, fetching and verifying it, and reading text and MIDI files."""
