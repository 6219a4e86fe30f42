"""The library's functions take its objects (parameterisation, weighting, time sampling, norm,
spacing, variables); the names of each concept's table are for configs, and a name passed to a
function is refused with the object to pass instead."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from sdeflow.checks import check_instance
from sdeflow.losses import NORMS, TIME_SAMPLINGS, WEIGHTINGS
from sdeflow.losses.norms import AbstractNorm, check_norm
from sdeflow.losses.time_sampling import AbstractTimeSampling, check_time_sampling
from sdeflow.losses.weighting import AbstractWeighting, check_weighting
from sdeflow.parameterisation import AbstractParameterisation, check_parameterisation, PARAMETERISATIONS
from sdeflow.samplers import AbstractSpacing, AbstractVariables, SPACINGS, VARIABLES
from sdeflow.samplers.spacing import check_spacing
from sdeflow.samplers.variables import check_variables


CONCEPTS = [
    ("parameterisation", PARAMETERISATIONS, AbstractParameterisation, check_parameterisation, "sdeflow.parameterisation"),
    ("weighting", WEIGHTINGS, AbstractWeighting, check_weighting, "sdeflow.losses"),
    ("time_sampling", TIME_SAMPLINGS, AbstractTimeSampling, check_time_sampling, "sdeflow.losses"),
    ("norm", NORMS, AbstractNorm, check_norm, "sdeflow.losses"),
    ("spacing", SPACINGS, AbstractSpacing, check_spacing, "sdeflow.samplers"),
    ("variables", VARIABLES, AbstractVariables, check_variables, "sdeflow.samplers"),
]
IDS = [concept[0] for concept in CONCEPTS]


@pytest.mark.parametrize("argument, table, base, check, where", CONCEPTS, ids=IDS)
def test_each_name_stands_for_a_class_whose_object_is_accepted(argument, table, base, check, where):
    for name, cls in table.items():
        obj = cls()
        assert isinstance(obj, base) and check(obj) is obj
        with pytest.raises(TypeError) as info:
            check(name)
        message = str(info.value)
        assert message.startswith(f"`{argument}` takes an {base.__name__} object")
        assert f"pass {where}.{cls.__name__}() instead of the string" in message


@pytest.mark.parametrize("argument, table, base, check, where", CONCEPTS, ids=IDS)
def test_other_values_are_refused_with_the_choices(argument, table, base, check, where):
    for value in ("no_such_name", 3, None):
        with pytest.raises(TypeError, match=f"`{argument}` takes an {base.__name__} object") as info:
            check(value)
        assert all(f"{cls.__name__}()" in str(info.value) for cls in table.values())
        assert "instead of the string" not in str(info.value)


def test_check_instance_returns_what_it_accepts():
    class Base:
        pass

    class One(Base):
        pass

    one = One()
    assert check_instance(one, "thing", Base, {"one": One}, "here") is one
    with pytest.raises(TypeError, match=r"pass here\.One\(\) instead of the string"):
        check_instance("one", "thing", Base, {"one": One}, "here")


# Every public function and class that takes one of the objects, called with a config's name. With
# the annotation checks on (the default) jaxtyping's check answers first (its own TypeError); the
# message of the library itself is checked with the checks off, below.
SETUP = """
import jax.numpy as jnp, jax.random as jr
from sdeflow import samplers
from sdeflow.losses import dsm_loss, vdm_elbo
from sdeflow.parameterisation import Epsilon, convert
from sdeflow.priors import Matern
from sdeflow.sde import VPSDE

sde = VPSDE(Matern(1, s=1.0, tau=3.0))
x0, key, model = jnp.zeros((2, 1, 8)), jr.key(0), lambda t, x: x
"""
CALLS = {
    "dsm_loss(model, sde, x0, key, parameterisation='v')": "sdeflow.parameterisation.V()",
    "dsm_loss(model, sde, x0, key, weighting='p2')": "sdeflow.losses.P2Weighting()",
    "dsm_loss(model, sde, x0, key, time_sampling='antithetic')": "sdeflow.losses.AntitheticTimeSampling()",
    "dsm_loss(model, sde, x0, key, norm='cameron_martin')": "sdeflow.losses.CameronMartinNorm()",
    "vdm_elbo(model, sde, x0, key, parameterisation='x0')": "sdeflow.parameterisation.X0()",
    "vdm_elbo(model, sde, x0, key, time_sampling='uniform')": "sdeflow.losses.UniformTimeSampling()",
    "convert(x0, 'score', Epsilon(), x0, 1.0, 1.0)": "sdeflow.parameterisation.Score()",
    "samplers.PreconditionedScore(model, sde, 'epsilon')": "sdeflow.parameterisation.Epsilon()",
    "samplers.time_grid(sde, 4, 1.0, 0.0, 'log_snr')": "sdeflow.samplers.LogSNRSpacing()",
    "samplers.DDIM(10, spacing='log_snr')": "sdeflow.samplers.LogSNRSpacing()",
    "samplers.ReverseSDE(num_steps=10, spacing='uniform')": "sdeflow.samplers.UniformSpacing()",
    "samplers.PredictorCorrector(10, spacing='log_snr')": "sdeflow.samplers.LogSNRSpacing()",
    "samplers.ProbabilityFlow(spacing='log_snr')": "sdeflow.samplers.LogSNRSpacing()",
    "samplers.ProbabilityFlow(variables='t')": "sdeflow.samplers.ReversedTime()",
    "samplers.ProbabilityFlow(variables='sigma')": "sdeflow.samplers.NoiseLevel()",
    "samplers.ProbabilityFlow(variables='log_sigma')": "sdeflow.samplers.LogNoiseLevel()",
}


def test_public_functions_refuse_names():
    scope = {}
    exec(SETUP, scope)
    for call in CALLS:
        with pytest.raises(TypeError):
            eval(call, scope)


def test_public_functions_name_the_object_to_pass():
    """With the annotation checks off (`SDEFLOW_TYPECHECK=0`; they would answer first, naming the
    parameter and the class it takes), the library's own message answers each call."""
    script = SETUP + textwrap.dedent(f"""
        import json
        messages = {{}}
        for call in {list(CALLS)!r}:
            try:
                eval(call)
            except TypeError as error:
                messages[call] = str(error)
        print(json.dumps(messages))
    """)
    env = dict(os.environ, JAX_PLATFORMS="cpu", SDEFLOW_TYPECHECK="0")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    messages = json.loads(result.stdout.strip().splitlines()[-1])
    for call, obj in CALLS.items():
        assert call in messages, f"{call} did not raise a TypeError"
        assert f"pass {obj} instead of the string" in messages[call], (call, messages[call])
