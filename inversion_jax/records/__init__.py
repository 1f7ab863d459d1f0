"""What a run writes and reads back: the run directory, history, report, TensorBoard, the original's file format."""
