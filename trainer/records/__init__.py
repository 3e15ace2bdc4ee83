"""What a run writes about itself: metrics lines, console, trackers, summary, history, reports."""
