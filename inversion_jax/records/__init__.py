"""What a run writes and reads back: atomic files, the run directory, history, console tables, report, TensorBoard, the original's file format."""
