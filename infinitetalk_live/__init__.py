"""InfiniteTalk Live command line: run the stack (`up`), speak through it (`say`), render to a file (`render`)."""
