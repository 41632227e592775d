"""What a study file says: the typed configuration (config), the searchable hyperparameters
(hyperparameters), the recorded metrics (metrics), and the pruners and samplers a study can
use. Imports nothing of sweeper's above it: every other layer reads these."""
