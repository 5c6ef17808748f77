"""Design-space exploration: chunked sweeps, constraints, Pareto fronts, optimisers, backends."""
