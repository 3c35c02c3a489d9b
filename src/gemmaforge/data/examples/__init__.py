"""data/examples"""
