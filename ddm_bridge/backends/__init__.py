"""DDM backends: one module per data-management system."""
