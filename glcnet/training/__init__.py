"""Lightning modules, schedules and the run functions behind the entry scripts."""
