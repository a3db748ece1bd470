"""Physics: abTEM template bank and the nuisance renderer (not built yet)."""
