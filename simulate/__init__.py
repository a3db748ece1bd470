"""Physics: the abTEM template bank and the nuisance renderer that turns it into patches."""
