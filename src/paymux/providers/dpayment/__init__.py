"""d払い (d Payment, NTT docomo) over "dpay v1", a paymux-defined protocol: signing, wire mapping, adapter and sandbox.

docomo gives its merchant interface specifications to contracted merchants only; see docs/providers/dpayment.md
for what is docomo's and what paymux defines.
"""
