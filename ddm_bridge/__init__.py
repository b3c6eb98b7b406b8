"""The bridge to data management: dataset subscriptions and the callbacks that
activate jobs once their inputs are at the site.

Jobs without input data need none of it: the broker activates them at once.
"""
