"""The base of the solvers that wrap another diffrax solver and add to each of its steps."""

import diffrax


class AbstractDelegatingSolver(diffrax.AbstractWrappedSolver):
    """A diffrax solver wrapping `solver` (an `eqx.AbstractVar` of diffrax's base): its terms,
    interpolation, orders and scan kind are the wrapped solver's; subclasses define `init` and
    `step`. A wrapped solver that reuses its last stage across steps (first-same-as-last) is
    refused by `refuse_fsal`, since what the wrapper changes between steps would make that stage
    stale."""

    def refuse_fsal(self, why: str) -> None:
        """Raise a `ValueError` naming the wrapped solver and `why` if it is first-same-as-last."""
        if getattr(getattr(self.solver, "tableau", None), "fsal", False):
            raise ValueError(f"{type(self.solver).__name__} reuses its last stage across steps, {why}")

    @property
    def term_structure(self):
        return self.solver.term_structure

    @property
    def interpolation_cls(self):
        return self.solver.interpolation_cls

    @property
    def term_compatible_contr_kwargs(self):
        return self.solver.term_compatible_contr_kwargs

    @property
    def scan_kind(self):
        # Read by diffrax's adjoints for (wrapped) Runge-Kutta solvers.
        return getattr(self.solver, "scan_kind", None)

    def order(self, terms):
        return self.solver.order(terms)

    def strong_order(self, terms):
        return self.solver.strong_order(terms)
