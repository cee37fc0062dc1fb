"""sleepsound.deploy"""
