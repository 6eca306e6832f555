"""Challenge validators: decide whether a PKCSReq may be issued."""
