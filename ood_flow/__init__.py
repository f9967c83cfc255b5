"""oodflow: out-of-distribution detection with normalizing flows.

Implements and extends Kirichenko, Izmailov & Wilson, "Why Normalizing Flows
Fail to Detect Out-of-Distribution Data" (NeurIPS 2020).
"""

__version__ = "0.1.0"
