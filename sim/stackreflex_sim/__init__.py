"""The simulated overcloud: the parts of Keystone v3 and Heat v1 that stackreflex uses, plus
Swift-style temp-URL metadata, served over real HTTP so openstacksdk talks to it unmodified.

Not yet simulated: Nova, Cinder, Glance, SSH nodes and injectable faults.
"""
