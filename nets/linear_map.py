"""Linear maps whose transpose is written by hand, so that reverse mode runs fast operations."""

from collections.abc import Callable

import jax
from jaxtyping import Array


def linear_map(
    f: Callable[[Array], Array], f_transpose: Callable[[Array], Array], x: Array
) -> Array:
    """`f(x)` for a linear map `f`, differentiated in reverse mode through `f_transpose`.

    JAX transposes a linear function one operation at a time. For a product with a constant
    matrix that gives the same product contracting the matrix's other axis, which XLA's CPU
    backend runs as a non-canonical dot, a quarter to a third slower than the canonical one. For
    slices, concatenations and sums it gives pads and accumulations that take two to three times
    as long as the forward pass. Here the transpose is written by hand in the same fast form as
    `f`, for example the product with the transposed constant.

    The map is a `jax.custom_jvp` whose tangent map is the transpose of `f_transpose` (JAX's
    `linear_transpose`), which is `f` again. Reverse mode transposes that tangent map back into
    `f_transpose`'s operations. Forward mode, `jax.linearize`, `vmap` and higher derivatives
    therefore all work, and give what they give for `f` when `f_transpose` is its transpose.

    **Arguments:**

    - `f`: a linear function of one array.
    - `f_transpose`: its transpose, mapping arrays shaped like `f(x)` to arrays shaped like `x`.
      It must satisfy $\\langle f(x), y \\rangle = \\langle x, f^T(y) \\rangle$; the tests of
      each use check this.
    - `x`: the argument.

    **Returns:**

    `f(x)`.
    """
    out_struct = jax.eval_shape(f, x)

    @jax.custom_jvp
    def op(x):
        return f(x)

    @op.defjvp
    def op_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        (tangent,) = jax.linear_transpose(f_transpose, out_struct)(t)
        return f(x), tangent

    return op(x)
