import subprocess
import sys


def test_import_prob_pulls_in_no_other_layer():
    code = (
        "import sys, prob, prob.io, prob.priors, prob.metrics, prob.datasets\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('simulate', 'likelihood', 'inference', 'torch', 'pyro', 'abtem')]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
