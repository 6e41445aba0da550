"""Options: defaults and presets (config), derived constructor kwargs (derive), processes (launch)."""
